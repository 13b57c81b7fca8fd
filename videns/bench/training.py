"""Training speed: our member loop against the reference loop, and the full-size model's step time.

``compare_training`` trains the same model on the same data with both loops
and reports epoch times and validation accuracy. Ours is ``train_member``
itself, so its epochs include what a real member does: validation, a verified
checkpoint and the history file. An epoch's wall time runs from the end of the
previous epoch to the end of this one; the first epoch also holds the setup
(data checks, preload, model build) and is reported apart. The two loops take
turns epoch by epoch.
"""

import logging
import math
import random
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from videns.bench.baseline import ReferenceTemporalModel, ReferenceTrainer
from videns.bench.data import BenchData
from videns.bench.measure import Stopwatch, ratio, synchronize, time_interleaved, time_repeats
from videns.bench.profiles import Profile, describe_model
from videns.config import parse_member_config
from videns.data.augment import augmented_lengths
from videns.member.train import train_member
from videns.models.temporal import TemporalAttentionClassifier
from videns.training.loss import FocalLoss
from videns.training.step import train_step

log = logging.getLogger(__name__)
NUM_CLASSES = 4


def compare_training(
    data: BenchData,
    profile: Profile,
    *,
    model_args: dict[str, Any],
    num_workers: int,
    device: torch.device,
    work_dir: Path,
    bucket_window: int,
    seed: int = 0,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Train with both loops for ``profile.epochs`` epochs; ``epoch_time_ratio`` = ours / reference.

    The loops take turns epoch by epoch (a reference epoch runs inside our
    end-of-epoch hook, off our clock), so drifting load on a shared machine
    falls on both alike.
    """
    reference: dict[str, Any] = {"setup_s": 0.0, "epochs": []}
    trainer: list[ReferenceTrainer] = []
    reference_rng: list[tuple] = []

    def reference_epoch() -> None:
        # Each loop keeps its own global RNG streams (dropout, sampling), as if it ran alone.
        ours_rng = _global_rng_state()
        if reference_rng:
            _set_global_rng_state(reference_rng.pop())
        if not trainer:
            with Stopwatch(device) as setup:
                trainer.append(
                    ReferenceTrainer(
                        data.root,
                        model_args,
                        seed=seed,
                        batch_size=profile.batch_size,
                        lr=profile.lr,
                        num_workers=num_workers,
                        device=device,
                        out_dir=_fresh(work_dir / f"reference-{data.name}"),
                    )
                )
            reference["setup_s"] = setup.seconds
        reference["epochs"].append(trainer[0].run_epoch())
        reference_rng.append(_global_rng_state())
        _set_global_rng_state(ours_rng)

    ours = _summarize(
        run_ours(
            data,
            model_args,
            seed=seed,
            epochs=profile.epochs,
            batch_size=profile.batch_size,
            lr=profile.lr,
            num_workers=num_workers,
            device=device,
            out_dir=_fresh(work_dir / f"ours-{data.name}"),
            bucket_window=bucket_window,
            precision=precision,
            between_epochs=reference_epoch,
        )
    )
    reference = _summarize(reference)
    num_params = sum(
        p.numel() for p in TemporalAttentionClassifier(data.feature_dim, NUM_CLASSES, **model_args).parameters()
    )
    gap = ours["best_val_accuracy"] - reference["best_val_accuracy"]
    tolerance = equal_quality_tolerance(
        (ours["best_val_accuracy"] + reference["best_val_accuracy"]) / 2, data.num_items("val")
    )
    return {
        "workload": {
            "model": describe_model(model_args, num_params),
            "batch": profile.batch_size,
            "workers": num_workers,
            "device": str(device),
            "data": data.name,
            "epochs": profile.epochs,
            "lr": profile.lr,
            "threads": torch.get_num_threads(),
            "ours_settings": {"bucket_window": bucket_window, "preload": True, "precision": precision},
            "reference_settings": {
                "precision": "fp32",
                "sampler": "WeightedRandomSampler",
                "scheduler": "CosineAnnealingWarmRestarts(T_0=20, T_mult=2) per batch",
            },
        },
        "ours": ours,
        "reference": reference,
        "epoch_time_ratio": ratio(ours["steady_epoch_s"], reference["steady_epoch_s"]),
        "train_phase_ratio": ratio(ours["steady_train_s"], reference["steady_train_s"]),
        "total_time_ratio": ratio(ours["total_s"], reference["total_s"]),
        "equal_quality": {
            "best_val_accuracy_gap": gap,
            "tolerance": tolerance,
            "val_items": data.num_items("val"),
            "equal": abs(gap) <= tolerance,
            "not_worse": gap >= -tolerance,
            "rule": "tolerance = two binomial standard errors of the val accuracy; equal: "
            "|ours - reference| <= tolerance; not_worse (what the target needs): "
            "ours >= reference - tolerance",
        },
    }


def equal_quality_tolerance(accuracy: float, val_items: int) -> float:
    """Two binomial standard errors of an accuracy measured on ``val_items`` items (at least one item)."""
    return max(2.0 * math.sqrt(accuracy * (1.0 - accuracy) / val_items), 1.0 / val_items)


def run_ours(
    data: BenchData,
    model_args: dict[str, Any],
    *,
    seed: int,
    epochs: int,
    batch_size: int,
    lr: float,
    num_workers: int,
    device: torch.device,
    out_dir: Path,
    bucket_window: int,
    precision: str,
    between_epochs: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """``train_member`` with our speed settings; per-epoch records as the reference trainer gives.

    ``between_epochs`` runs after each epoch's end (checkpoint committed) and is kept off our clock.
    """
    args = [
        "--data.root",
        str(data.root),
        "--out_dir",
        str(out_dir),
        "--seed",
        str(seed),
        "--data.num_workers",
        str(num_workers),
        "--data.bucket_window",
        str(bucket_window),
        "--trainer.batch_size",
        str(batch_size),
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.patience",
        "0",
        "--trainer.device",
        device.type,
        "--trainer.precision",
        precision,
        "--trainer.progress",
        "off",
        "--optimizer.lr",
        str(lr),
        "--checkpoint.resume",
        "never",
    ]
    for key, value in model_args.items():
        args += [f"--model.init_args.{key}", str(list(value) if isinstance(value, tuple) else value)]
    cfg = parse_member_config(args)
    records: list[dict[str, Any]] = []
    clock = {"resumed": time.perf_counter()}

    def on_epoch_end(record: dict[str, Any]) -> None:
        synchronize(device)
        records.append(
            {
                "epoch": record["epoch"],
                "wall_s": time.perf_counter() - clock["resumed"],
                "train_s": record["seconds"],
                "train_loss": record["train_loss"],
                "val_accuracy": record["val_accuracy"],
            }
        )
        if between_epochs is not None:
            between_epochs()
        clock["resumed"] = time.perf_counter()

    train_member(cfg, on_epoch_end=on_epoch_end)
    return {"setup_s": 0.0, "epochs": records}  # setup is inside the first epoch's wall time


def _summarize(run: dict[str, Any]) -> dict[str, Any]:
    epochs = run["epochs"]
    steady = epochs[1:] or epochs
    return {
        "first_epoch_with_setup_s": run["setup_s"] + epochs[0]["wall_s"],
        "steady_epoch_s": statistics.median(e["wall_s"] for e in steady),
        "steady_train_s": statistics.median(e["train_s"] for e in steady),
        "total_s": run["setup_s"] + sum(e["wall_s"] for e in epochs),
        "best_val_accuracy": max(e["val_accuracy"] for e in epochs),
        "final_val_accuracy": epochs[-1]["val_accuracy"],
        "epochs": epochs,
    }


def _global_rng_state() -> tuple:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return torch.get_rng_state(), cuda, np.random.get_state(), random.getstate()


def _set_global_rng_state(state: tuple) -> None:
    cpu, cuda, numpy_state, python_state = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
    np.random.set_state(numpy_state)
    random.setstate(python_state)


def _fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def make_train_step(
    model: torch.nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    *,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    fused: bool = False,
    host_sync: bool = False,
) -> Callable[[], None]:
    """Our optimizer step (AdamW, focal loss, clipping; :func:`train_step`) on a fixed batch, as a callable to time."""
    features, lengths, labels = batch
    on_device = (features.to(device), lengths, labels.to(device))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=5e-4, **({"fused": True} if fused else {}))
    criterion = FocalLoss(None, 2.0, 0.1).to(device)
    model.train()

    def step() -> None:
        loss = train_step(model, optimizer, criterion, on_device, autocast_dtype=autocast_dtype, grad_clip=1.0)
        if host_sync:
            loss.item()

    return step


def time_train_steps(
    model: torch.nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    *,
    device: torch.device,
    steps: int,
    warmup: int = 1,
    **step_options,
) -> dict[str, Any]:
    """Seconds per optimizer step on one fixed batch (see :func:`make_train_step`)."""
    return time_repeats(
        make_train_step(model, batch, device=device, **step_options), repeats=steps, warmup=warmup, device=device
    )


def random_batch(
    batch_size: int, max_frames: int, feature_dim: int, seed: int = 0, lengths: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A (B, T, D) batch with the given lengths (default: all T), zero after each length."""
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(batch_size, max_frames, feature_dim, generator=gen)  # (B, T, D)
    lengths = torch.full((batch_size,), max_frames, dtype=torch.long) if lengths is None else lengths
    features[torch.arange(max_frames)[None, :] >= lengths[:, None]] = 0.0
    return features, lengths, torch.randint(0, NUM_CLASSES, (batch_size,), generator=gen)


def training_step(profile: Profile, device: torch.device) -> Callable[[], None]:
    """One optimizer step of the training-comparison model on a fixed random batch, finished on the device."""
    torch.manual_seed(0)
    model = TemporalAttentionClassifier(profile.feature_dim, NUM_CLASSES, **profile.train_model).to(device)
    step = make_train_step(
        model, random_batch(profile.batch_size, profile.max_frames, profile.feature_dim), device=device
    )

    def step_and_sync() -> None:
        step()
        synchronize(device)

    return step_and_sync


def full_model_steps(profile: Profile, device: torch.device) -> dict[str, Any]:
    """Step time of the full-size model at batch B, T=max_frames: ours (unpacked, masked), and reference
    unless the profile leaves it out.

    Both start from the same weights and take turns, one step each, after ``profile.full_warmup`` warm-up
    steps each.
    """
    batch = random_batch(profile.batch_size, profile.max_frames, profile.feature_dim)
    torch.manual_seed(0)
    ours_model = TemporalAttentionClassifier(profile.feature_dim, NUM_CLASSES, **profile.full_model).to(device)
    num_params = sum(p.numel() for p in ours_model.parameters())
    steps = {"ours": make_train_step(ours_model, batch, device=device)}
    if profile.full_reference:
        reference_model = ReferenceTemporalModel(profile.feature_dim, NUM_CLASSES, **profile.full_model).to(device)
        reference_model.load_state_dict(ours_model.state_dict())
        steps["reference"] = make_train_step(reference_model, batch, device=device, host_sync=True)
    timings = time_interleaved(steps, repeats=profile.full_steps, warmup=profile.full_warmup, device=device)
    result = {
        "workload": {
            "model": describe_model(profile.full_model, num_params),
            "batch": profile.batch_size,
            "workers": 0,
            "device": str(device),
            "data": f"random, all lengths {profile.max_frames}",
            "feature_dim": profile.feature_dim,
            "precision": "fp32",
            "threads": torch.get_num_threads(),
        },
        "ours_step": timings["ours"],
    }
    if "reference" in timings:
        result["reference_step"] = timings["reference"]
        result["step_time_ratio"] = ratio(timings["ours"]["median_s"], timings["reference"]["median_s"])
    return result


class _AlwaysPackedModel(TemporalAttentionClassifier):
    """Our model with the LSTM always run through torch's packing (``enforce_sorted=False``)."""

    def _run_lstm(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
        return pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=h.shape[1])[0]


class _ByDirectionModel(TemporalAttentionClassifier):
    """Our model with the LSTM always unpacked, one direction at a time (the CPU path), on any device."""

    def _run_lstm(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self._lstm_by_direction(h, lengths)


def unpacked_lstm_steps(profile: Profile, device: torch.device, repeats: int = 3) -> dict[str, Any]:
    """Step time of the training model on a variable-length batch: our LSTM path against torch's packing.

    The lengths are what augmentation makes of one batch of all-``max_frames`` data.
    On CPU our path is the unpacked one; on CUDA it packs (sorting on the host),
    and the unpacked path is timed as a third variant, to see whether it helps cuDNN too.
    """
    T = profile.max_frames
    lengths = torch.from_numpy(augmented_lengths(np.full(profile.batch_size, T), seed=1, epoch=0))
    batch = random_batch(profile.batch_size, T, profile.feature_dim, lengths=lengths)
    torch.manual_seed(0)
    ours = TemporalAttentionClassifier(profile.feature_dim, NUM_CLASSES, **profile.train_model).to(device)
    variants = {"packed": _AlwaysPackedModel, **({"unpacked": _ByDirectionModel} if device.type == "cuda" else {})}
    models = {"ours": ours}
    for name, cls in variants.items():
        models[name] = cls(profile.feature_dim, NUM_CLASSES, **profile.train_model).to(device)
        models[name].load_state_dict(ours.state_dict())
    timings = time_interleaved(
        {name: make_train_step(model, batch, device=device) for name, model in models.items()},
        repeats=repeats,
        device=device,
    )
    unpacked = timings.get("unpacked", timings["ours"])
    return {
        "workload": {
            "model": describe_model(profile.train_model, sum(p.numel() for p in ours.parameters())),
            "batch": profile.batch_size,
            "workers": 0,
            "device": str(device),
            "data": f"random, lengths {int(lengths.min())}-{T}",
            "threads": torch.get_num_threads(),
        },
        **timings,
        "unpacked_lstm_step_ratio": ratio(unpacked["median_s"], timings["packed"]["median_s"]),
        "ours_step_ratio_vs_packed": ratio(timings["ours"]["median_s"], timings["packed"]["median_s"]),
    }
