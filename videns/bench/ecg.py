"""The heartbeat recipes' models on ECG-shaped data: ours against a reference loop whose GRU always packs.

Data, converted by ``jobs.convert``'s code (D=1):
- ``ecg``: beats of 187 samples padded to 192, 5 classes, as MIT-BIH is;
- ``ecg_long``: series of 427 samples, 6 classes, kept at their own length: the shape
  of a public set on which a GRU run through ``pack_padded_sequence`` is slow. Training steps only,
  and ``cnn1d_gru`` only: at 200 items its val accuracy stayed near chance (0.15-0.30 in
  15 epochs), so an epoch comparison there would claim equal accuracy for nothing, and
  ``cnn2d``'s recipe folds 192 steps into its image.

For each model at its recipe's
sizes (model and batch), ``train_member`` with the recipe (balancing off, so both loops
see the same items) takes turns, epoch by epoch, with the reference: a plain
loop (per-item HDF5 reads, a host sync every step, Adam and cross-entropy as the
recipe, with its weight decay and clipping) on the same model, whose GRU always runs through
``pack_padded_sequence``.
``ecg_epoch_time_ratio`` = ours / reference steady epoch seconds, per model;
``ecg_long_step_time_ratio`` = ours / reference seconds per training step.
"""

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence

from videns.bench.baseline import ReferenceDataset, build_reference_loader
from videns.bench.measure import Stopwatch, ratio, time_interleaved
from videns.bench.training import _fresh, _global_rng_state, _set_global_rng_state, _summarize, equal_quality_tolerance
from videns.config import parse_member_config
from videns.data import layout
from videns.data.tabular import convert_tables
from videns.member.train import train_member
from videns.models.base import recurrent_precision
from videns.models.cnn1d_gru import CNN1DGRUClassifier

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RECIPES = {"cnn1d_gru": CONFIGS / "ecg_cnn1d_gru.yaml", "cnn2d": CONFIGS / "ecg_cnn2d.yaml"}


@dataclass(frozen=True)
class EcgShape:
    """One kind of table: its series' length, the length after conversion, its classes and the models run on it."""

    samples: int
    steps: int
    classes: int
    models: tuple[str, ...]
    ratio_key: str
    cpu_targets: dict[str, str]
    steps_only: bool = False

    def describe(self) -> str:
        padding = f" ({self.samples} real)" if self.steps != self.samples else ""
        return f"ECG-shaped, {self.steps} steps{padding}, D=1, {self.classes} classes"


# Targets on CPU, per model. At 192 steps the unpacked GRU already runs at about 65% of this core's
# large-GEMM rate, so its epoch cannot halve; at 427 steps packing's per-step loop costs far more;
# cnn2d has no recurrent layer, so the loop alone decides, and it must not be slower than the reference's.
SHAPES = {
    "ecg": EcgShape(
        187, 192, 5, ("cnn1d_gru", "cnn2d"), "ecg_epoch_time_ratio", {"cnn1d_gru": "<= 0.75", "cnn2d": "<= 1.0"}
    ),
    "ecg_long": EcgShape(
        427, 427, 6, ("cnn1d_gru",), "ecg_long_step_time_ratio", {"cnn1d_gru": "<= 0.5"}, steps_only=True
    ),
}
# Test-only sizes: the recipe's models would take minutes per epoch there.
TINY_MODELS = {
    "cnn1d_gru": {"hidden_dim": 8, "gru_hidden": 8, "num_blocks": 1},
    "cnn2d": {"hidden_dim": 8, "channels": 8},
}


@dataclass(frozen=True)
class EcgSize:
    """How big the ECG section is in one profile.

    Args:
        train_items: beats in the train table (a fifth of them are drawn as val).
        long_train_items: series in the ``ecg_long`` train table (its steps need one batch).
        epochs: epochs per loop and model (the first, with setup, is reported apart).
        step_repeats: timed training steps per model and loop, one fixed batch.
        model_overrides: init_args replacing the recipe's, per model (tiny only).
    """

    train_items: int
    long_train_items: int
    epochs: int
    step_repeats: int
    model_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)


SIZES = {
    "tiny": EcgSize(train_items=50, long_train_items=30, epochs=2, step_repeats=1, model_overrides=TINY_MODELS),
    "quick": EcgSize(train_items=800, long_train_items=40, epochs=5, step_repeats=3),
    "full": EcgSize(train_items=1500, long_train_items=40, epochs=8, step_repeats=5),
}


class AlwaysPackedCNN1DGRU(CNN1DGRUClassifier):
    """The same layers with the GRU always on ``pack_padded_sequence(enforce_sorted=False)``."""

    def _gru_last_states(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        with recurrent_precision(h.device.type):
            packed = pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
            return self.gru(packed)[1][-1]  # (B, gru_hidden); h_n comes back in the batch's order


def measure_ecg(
    shape_name: str, profile_name: str, work_dir: Path, device: torch.device, num_workers: int
) -> dict[str, Any]:
    """The shape's models, steps and epochs; ``{model: {...}}`` plus the data's description."""
    size, shape = SIZES[profile_name], SHAPES[shape_name]
    train_items = size.long_train_items if shape.steps_only else size.train_items
    root = write_ecg_tables(work_dir / f"{shape_name}-data", train_items, shape)
    result: dict[str, Any] = {
        "data": {
            "root": str(root),
            "train_items": train_items,
            "steps": shape.steps,
            "real_steps": shape.samples,
            "feature_dim": 1,
            "classes": shape.classes,
        }
    }
    for name in shape.models:
        result[name] = compare_model(name, size, shape, root, work_dir / f"{shape_name}-runs", device, num_workers)
    return result


def write_ecg_tables(folder: Path, train_items: int, shape: EcgShape, seed: int = 0) -> Path:
    """Beat-like tables (class k: a pulse at its own place and width, plus noise) converted to HDF5 splits."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, items, offset in (("train", train_items, 0), ("test", max(train_items // 4, shape.classes), 1)):
        rng = np.random.default_rng(seed + offset)
        targets = np.arange(items) % shape.classes
        t = np.linspace(0.0, 1.0, shape.samples)[None, :]
        centre = 0.2 + 0.6 / shape.classes * targets[:, None] + rng.normal(0, 0.03, (items, 1))
        width = 0.02 + 0.01 * targets[:, None]
        signal = np.exp(-((t - centre) ** 2) / (2 * width**2)) + 0.15 * rng.standard_normal((items, shape.samples))
        paths[split] = folder / f"{split}.csv"
        with paths[split].open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([f"c{i}" for i in range(shape.samples)] + ["target"])
            writer.writerows([*(f"{v:.5f}" for v in row), int(k)] for row, k in zip(signal, targets))
    pad_to = shape.steps if shape.steps != shape.samples else None
    convert_tables(paths["train"], paths["test"], folder / "h5", pad_to=pad_to, overwrite=True)
    return folder / "h5"


def compare_model(
    name: str, size: EcgSize, shape: EcgShape, root: Path, work_dir: Path, device: torch.device, num_workers: int
) -> dict[str, Any]:
    """One model: step times on a fixed batch, then (unless ``shape.steps_only``) epochs of both loops taking turns."""
    cfg = parse_member_config(member_args(name, size, root, work_dir / f"ours-{name}", device, num_workers))
    steps = compare_steps(cfg, name, shape, root, size.step_repeats, device)
    init_args = cfg.resolved["model"]["init_args"]
    workload = {
        "model": f"{name}({', '.join(f'{k}={v}' for k, v in init_args.items())})",
        "batch": cfg.trainer.batch_size,
        "workers": num_workers,
        "device": str(device),
        "data": shape.describe(),
        "threads": torch.get_num_threads(),
        "recipe": RECIPES[name].name,
    }
    if shape.steps_only:
        return {"workload": workload, "steps": steps, shape.ratio_key: steps["step_time_ratio"]}
    reference = ReferenceLoop(cfg, name, shape.classes, root, device, num_workers)
    reference_run: dict[str, Any] = {"setup_s": reference.setup_s, "epochs": []}
    rng_states: list[tuple] = []

    def reference_epoch() -> None:
        ours_rng = _global_rng_state()  # each loop keeps its own RNG streams, as if it ran alone
        if rng_states:
            _set_global_rng_state(rng_states.pop())
        reference_run["epochs"].append(reference.run_epoch())
        rng_states.append(_global_rng_state())
        _set_global_rng_state(ours_rng)

    ours = _summarize(run_member(cfg, device, reference_epoch))
    reference_summary = _summarize(reference_run)
    gap = ours["best_val_accuracy"] - reference_summary["best_val_accuracy"]
    val_items = len(reference.val_loader.dataset)
    tolerance = equal_quality_tolerance(
        (ours["best_val_accuracy"] + reference_summary["best_val_accuracy"]) / 2, val_items
    )
    return {
        "workload": {**workload, "epochs": size.epochs},
        "steps": steps,
        "ours": ours,
        "reference": reference_summary,
        shape.ratio_key: ratio(ours["steady_epoch_s"], reference_summary["steady_epoch_s"]),
        "equal_quality": {
            "best_val_accuracy_gap": gap,
            "tolerance": tolerance,
            "val_items": val_items,
            "not_worse": gap >= -tolerance,
        },
    }


def member_args(
    name: str, size: EcgSize, root: Path, out_dir: Path, device: torch.device, num_workers: int
) -> list[str]:
    args = [
        "--config",
        str(RECIPES[name]),
        "--data.root",
        str(root),
        "--data.balance",
        "none",
        "--data.num_workers",
        str(num_workers),
        "--out_dir",
        str(_fresh(out_dir)),
        "--trainer.max_epochs",
        str(size.epochs),
        "--trainer.patience",
        "0",
        "--trainer.progress",
        "off",
        "--trainer.device",
        device.type,
        "--checkpoint.resume",
        "never",
    ]
    for key, value in size.model_overrides.get(name, {}).items():
        args += [f"--model.init_args.{key}", str(value)]
    return args


def run_member(cfg, device: torch.device, between_epochs) -> dict[str, Any]:
    records: list[dict[str, Any]] = []
    clock = {"resumed": time.perf_counter()}

    def on_epoch_end(record: dict[str, Any]) -> None:
        records.append(
            {
                "epoch": record["epoch"],
                "wall_s": time.perf_counter() - clock["resumed"],
                "train_s": record["seconds"],
                "val_accuracy": record["val_accuracy"],
            }
        )
        between_epochs()
        clock["resumed"] = time.perf_counter()

    train_member(cfg, on_epoch_end=on_epoch_end)
    return {"setup_s": 0.0, "epochs": records}  # setup is inside the first epoch's wall time


def build_models(cfg, name: str, classes: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(ours, reference) with the same weights; the reference differs only in always packing."""
    torch.manual_seed(0)
    ours = cfg.model(1, classes)
    if name != "cnn1d_gru":
        reference = cfg.model(1, classes)
    else:
        reference = AlwaysPackedCNN1DGRU(1, classes, **cfg.resolved["model"]["init_args"])
    reference.load_state_dict(ours.state_dict())
    return ours, reference


def compare_steps(cfg, name: str, shape: EcgShape, root: Path, repeats: int, device: torch.device) -> dict[str, Any]:
    """Seconds per Adam + cross-entropy step on one batch of real beats, both models taking turns."""
    dataset = ReferenceDataset(layout.split_path(root, "train"))
    batch = [dataset[i] for i in range(min(cfg.trainer.batch_size, len(dataset)))]
    features = torch.zeros(len(batch), shape.steps, 1)  # (B, T, 1), as our loader pads
    for i, (item, _) in enumerate(batch):
        features[i, : len(item)] = item
    lengths = torch.tensor([len(item) for item, _ in batch])
    labels = torch.tensor([label for _, label in batch], device=device)
    features = features.to(device)
    steps = {}
    for label, model in zip(("ours", "reference"), build_models(cfg, name, shape.classes)):
        model = model.to(device).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(model=model, optimizer=optimizer) -> None:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(features, lengths), labels).backward()
            optimizer.step()

        steps[label] = step
    timings = time_interleaved(steps, repeats=repeats, warmup=1, device=device)
    return {**timings, "step_time_ratio": ratio(timings["ours"]["median_s"], timings["reference"]["median_s"])}


class ReferenceLoop:
    """The reference loop, one epoch per call: per-item reads, shuffled batches, ``loss.item()`` every step."""

    def __init__(self, cfg, name: str, classes: int, root: Path, device: torch.device, num_workers: int):
        with Stopwatch(device) as setup:
            generator = torch.Generator().manual_seed(cfg.seed)
            self.train_loader = build_reference_loader(
                ReferenceDataset(layout.split_path(root, "train")),
                cfg.trainer.batch_size,
                num_workers,
                shuffle=True,
                generator=generator,
            )
            self.val_loader = build_reference_loader(
                ReferenceDataset(layout.split_path(root, "val")), cfg.trainer.eval_batch_size, num_workers
            )
            self.model = build_models(cfg, name, classes)[1].to(device)
            # the recipe's optimizer, as ours: the comparison is about the loop and the packing, not the recipe
            self.optimizer = torch.optim.Adam(
                self.model.parameters(), lr=cfg.optimizer.lr, weight_decay=cfg.optimizer.weight_decay
            )
        self.grad_clip = cfg.optimizer.grad_clip
        self.setup_s, self.device, self.epoch = setup.seconds, device, 0

    def run_epoch(self) -> dict[str, Any]:
        with Stopwatch(self.device) as wall:
            self.model.train()
            train_start = time.perf_counter()
            for features, lengths, labels in self.train_loader:
                self.optimizer.zero_grad()
                loss = F.cross_entropy(self.model(features.to(self.device), lengths), labels.to(self.device))
                loss.backward()
                if self.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
                self.optimizer.step()
                loss.item()  # a loop that logs every step syncs every step
            train_s = time.perf_counter() - train_start
            val_accuracy = self._validate()
        self.epoch += 1
        return {"epoch": self.epoch, "wall_s": wall.seconds, "train_s": train_s, "val_accuracy": val_accuracy}

    @torch.no_grad()
    def _validate(self) -> float:
        self.model.eval()
        correct = seen = 0
        for features, lengths, labels in self.val_loader:
            correct += (self.model(features.to(self.device), lengths).argmax(1).cpu() == labels).sum().item()
            seen += len(labels)
        return correct / max(seen, 1)
