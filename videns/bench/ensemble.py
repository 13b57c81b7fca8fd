"""Ensemble evaluation throughput: ``evaluate_ensemble`` over a 4-member run folder.

The members are freshly initialised models with distinct seeds, written as
finished members (best model + result file) exactly as training leaves them,
so ``evaluate_ensemble`` runs unchanged: it finds the members, rebuilds each
from its saved spec, makes one pass over the test split feeding every batch to
every member, and writes its report and plots. Only throughput is measured;
with untrained weights the accuracies mean nothing.

For comparison, a reference evaluation runs each member on its own pass over
the test file with the reference reader (members evaluated one
by one).
"""

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from videns.bench.baseline import ReferenceDataset, ReferenceTemporalModel, build_reference_loader
from videns.bench.data import BenchData
from videns.bench.measure import Stopwatch, ratio
from videns.bench.profiles import describe_model
from videns.data import layout
from videns.ensemble.evaluate import EnsembleEvalConfig, evaluate_ensemble
from videns.folders import RunFolder
from videns.member.checkpoint import save_best
from videns.member.loop import write_history
from videns.models.temporal import TemporalAttentionClassifier

NUM_MEMBERS = 4
MODEL_CLASS_PATH = "videns.models.TemporalAttentionClassifier"


def measure_ensemble(
    data: BenchData,
    model_args: dict[str, Any],
    *,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    work_dir: Path,
) -> dict[str, Any]:
    """Test sequences/s of a 4-member evaluation, without and with the four TTA views."""
    run_dir = Path(work_dir) / "ensemble-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    models = _write_members(run_dir, data, model_args)
    results = {}
    for tta in (False, True):
        cfg = EnsembleEvalConfig(
            run_dir=run_dir,
            tta=tta,
            data_root=data.root,
            batch_size=batch_size,
            device=device.type,
            num_workers=num_workers,
        )
        with Stopwatch(device) as wall:
            report = evaluate_ensemble(cfg)
        evaluation = report["evaluation"]
        num_items = int(report["num_items"])
        results["tta" if tta else "no_tta"] = {
            "views": evaluation["num_views"],
            "test_items": num_items,
            "pass_s": evaluation["seconds"],
            "sequences_per_s": evaluation["sequences_per_second"],
            "evaluate_ensemble_wall_s": wall.seconds,
            "sequences_per_s_end_to_end": num_items / wall.seconds,
        }
    reference = _reference_passes(data, models, model_args, batch_size, num_workers, device)
    num_params = sum(p.numel() for p in models[0].parameters())
    return {
        "workload": {
            "model": describe_model(model_args, num_params),
            "members": NUM_MEMBERS,
            "batch": batch_size,
            "workers": num_workers,
            "device": str(device),
            "data": data.name,
            "weights": "untrained (throughput only)",
        },
        **results,
        "reference_member_passes": reference,
        "ensemble_speedup": ratio(results["no_tta"]["sequences_per_s"], reference["sequences_per_s"]),
    }


def _write_members(run_dir: Path, data: BenchData, model_args: dict[str, Any]) -> list[torch.nn.Module]:
    models = []
    init_args = {k: list(v) if isinstance(v, tuple) else v for k, v in model_args.items()}
    for seed in range(NUM_MEMBERS):
        torch.manual_seed(seed)
        model = TemporalAttentionClassifier(data.feature_dim, len(layout.VIDEO_CLASS_NAMES), **model_args)
        folder = RunFolder(run_dir).member(seed)
        folder.root.mkdir(parents=True)
        meta = {
            "epoch": 1,
            "seed": seed,
            "model": {"class_path": MODEL_CLASS_PATH, "init_args": init_args},
            "data": {"feature_dim": data.feature_dim, "class_names": list(layout.VIDEO_CLASS_NAMES)},
            "config": {"data": {"root": str(data.root)}},
            "val_metrics": {},
        }
        save_best(folder, model, meta)
        folder.result_file.write_text(json.dumps({"status": "finished", "epoch": 1}))
        folder.resources.write_text("")
        write_history(
            folder,
            [
                {
                    "epoch": 1,
                    "train_loss": 1.0,
                    "val_loss": 1.0,
                    "val_accuracy": 0.25,
                    "val_f1_weighted": 0.1,
                    "val_f1_macro": 0.1,
                    "lr": 1e-3,
                    "seconds": 1.0,
                }
            ],
        )
        models.append(model)
    return models


@torch.no_grad()
def _reference_passes(
    data: BenchData,
    models: list[torch.nn.Module],
    model_args: dict[str, Any],
    batch_size: int,
    num_workers: int,
    device: torch.device,
) -> dict[str, Any]:
    """Each member on its own pass over the test file, reference reader and forward."""
    test = ReferenceDataset(data.path("test"))
    loader = build_reference_loader(test, batch_size, num_workers)
    with Stopwatch(device) as wall:
        for model in models:
            reference_model = ReferenceTemporalModel(data.feature_dim, len(layout.VIDEO_CLASS_NAMES), **model_args)
            reference_model.load_state_dict(model.state_dict())
            reference_model.to(device).eval()
            for features, lengths, _labels in loader:
                torch.softmax(reference_model(features.to(device), lengths), dim=1).cpu()
    return {"views": 1, "test_items": len(test), "seconds": wall.seconds, "sequences_per_s": len(test) / wall.seconds}
