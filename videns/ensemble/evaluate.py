"""Evaluate an ensemble's members on validation and test, combine and calibrate on validation, write RUN/ensemble/.

Validation decides (collapse flags, combination weights, the temperature: see
:mod:`videns.ensemble.trust`); test only scores. Each split is read once.

All outputs are written into a staging folder first and moved into place one by
one, ``report.json`` last, so an earlier report survives until a complete new set
exists; files an earlier run wrote and this one does not are removed afterwards.
"""

import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch

from videns.data import layout
from videns.data.augment import TTA_MODES
from videns.data.config import GIB
from videns.data.dataset import FeatureSplit
from videns.data.inspect import DatasetInfo, inspect_dataset
from videns.ensemble import members as found
from videns.ensemble import report as rep
from videns.ensemble import baseline as sanity
from videns.ensemble import shape_baseline as shape
from videns.ensemble.combine import COMBINATIONS, Combination, combine
from videns.ensemble.conformal import DEFAULT_COVERAGE, coverage_problem
from videns.ensemble.predict import MultiViewItems, Predictions, build_multi_view_loader, predict_members
from videns.ensemble.selective import aurc, risk_coverage
from videns.ensemble.trust import Chosen, choose_on_validation
from videns.ensemble.uncertainty import write_predictions_csv
from videns.ensemble.resources import merge_resource_logs, run_cost
from videns.member.ledger import read_restarts
from videns.device import resolve_device
from videns.errors import CheckpointError, ConfigError
from videns.folders import EnsembleFolder, RunFolder
from videns.io import write_json_atomically
from videns.logs import setup_logging
from videns.metrics import expected_calibration_error, reliability_bins
from videns.plots import plot_confusion_matrix, plot_reliability_diagram, plot_risk_coverage, plot_training_curves

log = logging.getLogger(__name__)

OUTPUT_FILES = EnsembleFolder.OUTPUTS


@dataclass
class EnsembleEvalConfig:
    """Evaluate the members of a run and their ensemble: combined and calibrated on validation, scored on test.

    Args:
        run_dir: the run folder (holds members/seed_<N>/ and, from the launcher, launch.json).
        tta: average each member over the test-time views none/reverse/speed_up/speed_down first.
        members: evaluate only these seeds (default: every member of the run).
        data_root: folder holding the test split file (default: data.root saved with the first usable member).
        batch_size: test items per batch (every member and view sees each batch).
        device: auto picks cuda when available.
        num_workers: DataLoader worker processes reading the test file.
        preload_gb: read a split into RAM first when its padded features fit this budget (GiB).
        combine: how members combine, chosen on validation: mean (the plain softmax average), mean_unflagged
            (the average of members not flagged as collapsed), greedy (Caruana forward selection with
            replacement on validation NLL). Every combination is reported; this one is the ensemble.
        coverage: the share of test items whose conformal prediction set should hold their true class
            (split conformal, calibrated on validation).
        mondrian: calibrate the sets per class (class-conditional coverage) instead of over all classes.
    """

    run_dir: Path
    tta: bool = False
    members: list[int] | None = None
    data_root: Path | None = None
    batch_size: int = 128
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: int = 0
    preload_gb: float = 4.0
    combine: Combination = "mean"
    coverage: float = DEFAULT_COVERAGE
    mondrian: bool = False

    def __post_init__(self):
        self.run_dir = Path(self.run_dir)
        self.data_root = Path(self.data_root) if self.data_root is not None else None
        problems = []
        if not self.run_dir.is_dir():
            problems.append(f"run_dir {self.run_dir}: folder does not exist")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            problems.append(f"num_workers must be >= 0, got {self.num_workers}")
        if self.preload_gb < 0:
            problems.append(f"preload_gb must be >= 0, got {self.preload_gb}")
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.combine not in COMBINATIONS:
            problems.append(f"combine must be one of {', '.join(COMBINATIONS)}, got {self.combine!r}")
        if coverage_problem(self.coverage, "coverage"):
            problems.append(coverage_problem(self.coverage, "coverage"))
        if self.members is not None and not self.members:
            problems.append("members must name at least one seed when given")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def out_dir(self) -> Path:
        return RunFolder(self.run_dir).ensemble.root


def evaluate_ensemble(cfg: EnsembleEvalConfig) -> dict[str, Any]:
    """Evaluate, write every output in ``RUN/ensemble/`` and return the report.

    Raises CheckpointError (after writing a report saying so) when no member is
    usable, and CheckpointError/DataError when members disagree with each other
    or with the test file (then nothing is written).
    """
    seeds = found.select_seeds(found.expected_seeds(cfg.run_dir), cfg.members, cfg.run_dir)
    member_set = found.load_members(cfg.run_dir, seeds)
    modes = list(TTA_MODES) if cfg.tta else ["none"]
    run = RunFolder(cfg.run_dir)
    resources = merge_resource_logs({f"seed_{s}": run.member(s).resources for s in seeds},
                                    restarts={f"seed_{s}": read_restarts(run.member(s)) for s in seeds})
    context = {"run_dir": str(cfg.run_dir), "tta": cfg.tta, "tta_modes": modes, "expected_seeds": seeds,
               "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cost": run_cost(resources)}
    if not member_set.members:
        error = (f"no usable member in {cfg.run_dir} (seeds {seeds}): "
                 + "; ".join(f"seed {s.seed} {s.reason}" for s in member_set.skipped))
        failure = rep.failure_report(error=error, skipped=member_set.skipped, context=context)
        publish(cfg.out_dir, failure, {EnsembleFolder.RESOURCES_JSON: _json_writer(resources)})
        raise CheckpointError(f"{error}; see {cfg.out_dir / EnsembleFolder.REPORT_JSON}")

    members = member_set.members
    data_root = cfg.data_root or _saved_data_root(members)
    files, info = _check_data(members, data_root)
    device = resolve_device(cfg.device)
    # Both splits are opened (and, within preload_gb, read) before either is predicted: a damaged
    # chunk in test is then one line before any work, not after the validation pass.
    opened = {split: FeatureSplit(files[split], preload_bytes=int(cfg.preload_gb * GIB)) for split in ("val", "test")}
    val, test = (_predict(cfg, members, opened[split], len(info.class_names), modes, device)
                 for split in ("val", "test"))
    trust, chosen = choose_on_validation([m.seed for m in members], val, test, info.class_names, cfg.combine,
                                         cfg.coverage, cfg.mondrian)
    flags = {f["seed"]: f for f in trust["flags"]}
    entries = [{**rep.member_entry(m, test.member_probs[i], test.labels, info.class_names),
                "val_accuracy": flags[m.seed]["val_accuracy"], "flagged": flags[m.seed]["flagged"]}
               for i, m in enumerate(members)]
    seconds = val.seconds + test.seconds
    context.update(data_root=str(data_root), test_file=str(files["test"]), val_file=str(files["val"]),
                   evaluation={"device": str(device), "batch_size": cfg.batch_size, "num_views": len(modes),
                               "seconds": seconds,
                               "sequences_per_second": (len(val.labels) + len(test.labels)) / max(seconds, 1e-9)})
    report = rep.build_report(members=entries, ensemble_probs=chosen.probs, labels=test.labels,
                              class_names=info.class_names, skipped=member_set.skipped, context=context)
    report["ensemble"]["combination"] = cfg.combine
    baselines = _baselines(files, info)
    report.update(trust, num_val_items=int(len(val.labels)), baselines=baselines, baseline=_strongest(baselines))
    publish(cfg.out_dir, report, _writers(report, members, val, test, chosen, info.class_names, resources))
    return report


def evaluate_and_summarize(cfg: EnsembleEvalConfig, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Evaluate as a process does: logging to the ensemble folder's log, then ``say`` the summary table."""
    setup_logging(EnsembleFolder(cfg.out_dir).log)
    report = evaluate_ensemble(cfg)
    say(rep.format_summary(report).rstrip("\n"))
    say(f"report: {EnsembleFolder(cfg.out_dir).report_md}")
    return report


def _check_data(members: list[found.Member], data_root: Path) -> tuple[dict[str, Path], DatasetInfo]:
    """Validation and test are needed, train only for the baseline; every file found is checked before work."""
    splits = tuple(s for s in layout.SPLITS if s != "train" or layout.split_path(data_root, s).is_file())
    info = inspect_dataset(data_root, splits=splits, check_finite=False)  # finiteness is checked in the pass
    files = {split: layout.split_path(data_root, split) for split in splits}
    for split in ("test", "val"):
        found.check_test_data_agrees(members, info.class_names, info.feature_dim, files[split])
    return files, info


def _baselines(files: dict[str, Path], info: DatasetInfo) -> list[dict[str, Any]]:
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
        entries.append({"model": shape.MODEL_NAME, "skipped": f"estimated {estimate:.0f} s for {items} items of up "
                        f"to {frames} frames x {info.feature_dim} features, over its budget"})
    return entries


def _fit_baseline(name: str, fit: Callable[..., dict[str, Any]], files: dict[str, Path],
                  class_names: tuple[str, ...]) -> dict[str, Any]:
    try:
        return fit(files["train"], files["test"], class_names)
    except ValueError as err:  # e.g. a train split with one class; the ensemble's report still stands
        log.warning("baseline %s not fitted: %s", name, err)
        return {"model": name, "skipped": f"fit failed: {err}"}


def _strongest(baselines: list[dict[str, Any]]) -> dict[str, Any]:
    """The fitted baseline with the highest test accuracy; the first entry when none was fitted."""
    fitted = [b for b in baselines if "accuracy" in b]
    return max(fitted, key=lambda b: b["accuracy"]) if fitted else baselines[0]


def _writers(report: dict[str, Any], members: list[found.Member], val: Predictions, test: Predictions,
             chosen: Chosen, class_names: tuple[str, ...], resources: Any) -> dict[str, Callable[[Path], Any]]:
    title = (f"Ensemble of {len(members)}{' with TTA' if report['tta'] else ''} ({chosen.name}): "
             f"accuracy {report['ensemble']['accuracy']:.4f}")
    return {
        EnsembleFolder.PREDICTIONS: lambda path: _save_predictions(path, val, test, chosen,
                                                                   [m.seed for m in members]),
        EnsembleFolder.PREDICTIONS_CSV: lambda path: write_predictions_csv(
            path, chosen.calibrated, chosen.uncertainty, class_names, test.labels, chosen.probabilities, chosen.sets),
        EnsembleFolder.RELIABILITY_PNG: lambda path: _plot_reliability(val, test, chosen, path),
        EnsembleFolder.RISK_COVERAGE_PNG: lambda path: _plot_risk_coverage(test, chosen, path),
        EnsembleFolder.CONFUSION_PNG: lambda path: plot_confusion_matrix(
            np.asarray(report["ensemble"]["confusion_matrix"]), class_names, path, title=title),
        EnsembleFolder.CURVES_PNG: lambda path: _plot_curves(members, path),
        EnsembleFolder.RESOURCES_JSON: _json_writer(resources),
    }


def _plot_reliability(val: Predictions, test: Predictions, chosen: Chosen, path: Path) -> None:
    panels = {}
    scales = [("raw", 1.0)] + ([(f"T = {chosen.temperature:.2f}", chosen.temperature)]
                               if chosen.temperature != 1.0 else [])
    for split, pred in (("validation", val), ("test", test)):
        curves = {}
        for when, temperature in scales:
            probs = combine(pred.member_probs, chosen.weights, temperature)
            ece = expected_calibration_error(pred.labels, probs)
            curves[f"{when}, ECE {ece:.3f}"] = reliability_bins(pred.labels, probs)
        panels[split] = curves
    plot_reliability_diagram(panels, path, title=f"Reliability of {chosen.name}")


def _plot_risk_coverage(test: Predictions, chosen: Chosen, path: Path) -> None:
    correct = chosen.calibrated.argmax(axis=1) == test.labels
    curves = {}
    for label, confidence in (("max probability", chosen.calibrated.max(axis=1)),
                              ("mutual information (low first)", -chosen.uncertainty["mutual_information"])):
        coverage, risk = risk_coverage(confidence, correct)
        curves[f"{label}, AURC {aurc(confidence, correct):.4f}"] = (coverage, risk)
    plot_risk_coverage(curves, path, title=f"Risk-coverage of {chosen.name} on test")


def _predict(cfg: EnsembleEvalConfig, members: list[found.Member], split: FeatureSplit, num_classes: int,
             modes: list[str], device: torch.device) -> Predictions:
    loader = build_multi_view_loader(MultiViewItems(split, modes), cfg.batch_size, cfg.num_workers,
                                     pin_memory=device.type == "cuda")
    models = [m.model.to(device) for m in members]
    log.info("evaluating seeds %s on %s (%d items, views %s, device %s)",
             [m.seed for m in members], split.path, len(split), modes, device)
    return predict_members(models, loader, len(split), num_classes, device)


def _saved_data_root(members: list[found.Member]) -> Path:
    roots = [m.data_root for m in members]
    if roots[0] is None:
        raise ConfigError(f"member seed {members[0].seed}: its checkpoint records no data.root; pass --data_root")
    others = {str(r) for r in roots[1:] if r is not None and r != roots[0]}
    if others:
        log.warning("members were trained on different data.root values (%s and %s); testing on %s",
                    roots[0], ", ".join(sorted(others)), roots[0])
    return roots[0]


def _save_predictions(path: Path, val: Predictions, test: Predictions, chosen: Chosen, seeds: list[int]) -> None:
    """Members' own probabilities untouched; ``ensemble_probs`` is the combination before, ``calibrated_probs`` after T."""
    with open(path, "wb") as f:  # an open file keeps numpy from appending another .npz
        np.savez(f, member_probs=test.member_probs, ensemble_probs=chosen.probs, calibrated_probs=chosen.calibrated,
                 labels=test.labels, seeds=np.asarray(seeds, dtype=np.int64), weights=chosen.weights,
                 temperature=np.float64(chosen.temperature), val_member_probs=val.member_probs,
                 val_labels=val.labels)


def _plot_curves(members: list[found.Member], path: Path) -> None:
    histories = {f"seed {m.seed}": found.read_history(m.folder) for m in members}
    histories = {label: h for label, h in histories.items() if h}
    if not histories:
        log.warning("no member has a training history; %s not drawn", path.name)
        return
    try:
        plot_training_curves(histories, path)
    except ValueError as err:  # a malformed history should not cost the evaluation
        log.warning("%s not drawn: %s", path.name, err)


def _json_writer(data: Any) -> Callable[[Path], None]:
    return lambda path: write_json_atomically(path, data)


def publish(out_dir: Path, report: dict[str, Any], writers: dict[str, Callable[[Path], Any]]) -> None:
    """Write every output into a staging folder, then move them into ``out_dir`` with report.json last."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".staging-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    staging.mkdir()
    try:
        for name, write in writers.items():
            write(staging / name)
        written = [name for name in writers if (staging / name).exists()]
        report["files"] = sorted([*written, EnsembleFolder.REPORT_MD, EnsembleFolder.REPORT_JSON])
        (staging / EnsembleFolder.REPORT_MD).write_text(rep.format_markdown(report))
        write_json_atomically(staging / EnsembleFolder.REPORT_JSON, report)
        for name in OUTPUT_FILES:  # report.json is last
            if (staging / name).exists():
                os.replace(staging / name, out_dir / name)
        for name in set(OUTPUT_FILES) - set(report["files"]):
            (out_dir / name).unlink(missing_ok=True)  # an earlier run's file that does not describe this one
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("wrote %s", ", ".join(report["files"]))
