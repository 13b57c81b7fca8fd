"""What a run's ensemble and a library ensemble share before they decide anything: the split files checked against
the members, one pass of every member over validation and over test, and the baselines fitted beside them."""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from videns.data import layout
from videns.data.augment import TTA_MODES
from videns.data.config import GIB
from videns.data.dataset import FeatureSplit
from videns.data.inspect import DatasetInfo, inspect_dataset
from videns.device import resolve_device
from videns.ensemble import baseline as sanity
from videns.ensemble import members as found
from videns.ensemble import shape_baseline as shape
from videns.ensemble.eval_config import EnsembleEvalConfig
from videns.ensemble.member_probs import MultiViewItems, Predictions, build_multi_view_loader, predict_members

log = logging.getLogger(__name__)


@dataclass
class SplitPredictions:
    """Every member's probabilities on validation and on test, and how they were made."""

    val: Predictions
    test: Predictions
    device: torch.device
    modes: list[str]

    def evaluation(self, batch_size: int) -> dict[str, Any]:
        """The report's ``evaluation`` entry: device, views and speed."""
        seconds = self.val.seconds + self.test.seconds
        return {
            "device": str(self.device),
            "batch_size": batch_size,
            "num_views": len(self.modes),
            "seconds": seconds,
            "sequences_per_second": (len(self.val.labels) + len(self.test.labels)) / max(seconds, 1e-9),
        }


def check_data(members: list[found.Member], data_root: Path) -> tuple[dict[str, Path], DatasetInfo]:
    """Validation and test are needed, train only for the baseline; every file found is checked before work."""
    splits = tuple(s for s in layout.SPLITS if s != "train" or layout.split_path(data_root, s).is_file())
    info = inspect_dataset(data_root, splits=splits, check_finite=False)  # finiteness is checked in the pass
    files = {split: layout.split_path(data_root, split) for split in splits}
    for split in ("test", "val"):
        found.check_test_data_agrees(members, info.class_names, info.feature_dim, files[split])
    return files, info


def tta_modes(cfg: EnsembleEvalConfig) -> list[str]:
    """The views each member sees: all test-time views with ``--tta``, else the item as it is."""
    return list(TTA_MODES) if cfg.tta else ["none"]


def predict_splits(
    cfg: EnsembleEvalConfig, members: list[found.Member], files: dict[str, Path], info: DatasetInfo
) -> SplitPredictions:
    """One pass per split, each feeding every batch (and view) to every member."""
    modes = tta_modes(cfg)
    device = resolve_device(cfg.device)
    # Both splits are opened (and, within preload_gb, read) before either is predicted: a damaged
    # chunk in test is then one line before any work, not after the validation pass.
    opened = {split: FeatureSplit(files[split], preload_bytes=int(cfg.preload_gb * GIB)) for split in ("val", "test")}
    val, test = (
        _predict(cfg, members, opened[split], len(info.class_names), modes, device) for split in ("val", "test")
    )
    return SplitPredictions(val, test, device, modes)


def _predict(
    cfg: EnsembleEvalConfig,
    members: list[found.Member],
    split: FeatureSplit,
    num_classes: int,
    modes: list[str],
    device: torch.device,
) -> Predictions:
    loader = build_multi_view_loader(
        MultiViewItems(split, modes), cfg.batch_size, cfg.num_workers, pin_memory=device.type == "cuda"
    )
    models = [m.model.to(device) for m in members]
    log.info(
        "evaluating %s on %s (%d items, views %s, device %s)",
        [m.short_label for m in members],
        split.path,
        len(split),
        modes,
        device,
    )
    return predict_members(models, loader, len(split), num_classes, device)


def baselines(files: dict[str, Path], info: DatasetInfo) -> list[dict[str, Any]]:
    """The mean/std logistic regression, and the shape-aware one where it runs within its time budget."""
    if "train" not in files:
        return [{"model": sanity.MODEL_NAME, "skipped": f"no train split beside {files['test']}"}]
    entries = [_fit_baseline(sanity.MODEL_NAME, sanity.fit_and_score, files, info.class_names)]
    train, test = info.splits["train"], info.splits["test"]
    items = min(train.num_items, shape.MAX_TRAIN_ITEMS) + test.num_items
    frames = max(train.max_frames, test.max_frames)
    if shape.fits_budget(items, frames, info.feature_dim):
        entries.append(_fit_baseline(shape.MODEL_NAME, shape.fit_and_score, files, info.class_names))
    else:
        estimate = shape.estimated_seconds(items, frames, info.feature_dim)
        entries.append(
            {
                "model": shape.MODEL_NAME,
                "skipped": f"estimated {estimate:.0f} s for {items} items of up "
                f"to {frames} frames x {info.feature_dim} features, over its budget",
            }
        )
    return entries


def _fit_baseline(
    name: str, fit: Callable[..., dict[str, Any]], files: dict[str, Path], class_names: tuple[str, ...]
) -> dict[str, Any]:
    try:
        return fit(files["train"], files["test"], class_names)
    except ValueError as err:  # e.g. a train split with one class; the ensemble's report still stands
        log.warning("baseline %s not fitted: %s", name, err)
        return {"model": name, "skipped": f"fit failed: {err}"}


def strongest(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The fitted baseline with the highest test accuracy; the first entry when none was fitted."""
    fitted = [b for b in entries if "accuracy" in b]
    return max(fitted, key=lambda b: b["accuracy"]) if fitted else entries[0]
