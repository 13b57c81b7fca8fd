"""Apply a finished run's ensemble, or a library ensemble, to a features file: per-item classes, prediction sets,
probabilities and uncertainty.

By default the combination (weights by seed, or by candidate name for a library)
and temperature are the ones the ensemble job chose, read from its
``report.json`` (``RUN/ensemble/`` or the library ensemble's folder), and so are
test-time augmentation and the prediction sets' coverage, so the output
reproduces that job's probabilities and sets on the same file. The sets are
calibrated on the validation predictions the ensemble job saved in
``predictions.npz``. Everything is checked before any work; nothing existing is
overwritten without ``overwrite``. Each member (a library's candidates: from the
folders the report recorded) must still have the best model the report was
fitted on (``weights_sha256``).
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from videns.data.augment import TTA_MODES
from videns.data.config import GIB
from videns.data.dataset import FeatureSplit
from videns.device import resolve_device
from videns.ensemble import members as found
from videns.ensemble.calibration import calibration_metrics
from videns.ensemble.candidates import load_candidate
from videns.ensemble.combine import COMBINATIONS, Combination, combine
from videns.ensemble.conformal import coverage_problem, prediction_sets, set_metrics
from videns.ensemble.input_check import check_input_file
from videns.ensemble.member_probs import MultiViewItems, build_multi_view_loader, predict_members
from videns.ensemble.trust import probabilities_label
from videns.ensemble.uncertainty import item_uncertainty, write_predictions_csv
from videns.errors import CheckpointError, ConfigError
from videns.folders import EnsembleFolder, RunFolder
from videns.io import read_json, write_json_atomically
from videns.logs import Progress, shows_progress_bar
from videns.metrics import classification_metrics

log = logging.getLogger(__name__)

METRICS_SUFFIX = ".metrics.json"


@dataclass
class PredictConfig:
    """Apply a finished run's ensemble (or a library ensemble) to a features HDF5 file and write one CSV row per item.

    Args:
        input: features file in the split layout; labels and category_mapping may be absent.
        out: the CSV to write; with labels, the metrics go to the same name ending .metrics.json.
        run_dir: the run folder whose ensemble job has written ensemble/report.json.
        ensemble_dir: instead of run_dir: an ensemble folder written by jobs.ensemble_eval, such as a library
            ensemble's (--out_dir, default FIRST_DIR/library_ensemble) or RUN/ensemble.
        tta: average each member over the test-time views (default: as the run's ensemble job did).
        combine: mean, mean_unflagged or greedy, with the weights and temperature the ensemble job fitted
            for it on validation (default: the combination it chose).
        overwrite: replace an existing output instead of refusing.
        batch_size: items per batch (every member and view sees each batch).
        device: auto picks cuda when available.
        num_workers: DataLoader worker processes reading the input.
        preload_gb: read the input into RAM first when its padded features fit this budget (GiB).
        progress: auto shows a progress bar when stderr is a terminal.
        coverage: the prediction sets' coverage (default: the ensemble job's).
        mondrian: calibrate the sets per class (default: as the ensemble job did).
    """

    input: Path
    out: Path
    run_dir: Path | None = None
    ensemble_dir: Path | None = None
    tta: bool | None = None
    combine: Combination | None = None
    overwrite: bool = False
    batch_size: int = 128
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: int = 0
    preload_gb: float = 4.0
    progress: Progress = "auto"
    coverage: float | None = None
    mondrian: bool | None = None

    def __post_init__(self):
        self.input, self.out = Path(self.input), Path(self.out)
        self.run_dir = Path(self.run_dir) if self.run_dir is not None else None
        self.ensemble_dir = Path(self.ensemble_dir) if self.ensemble_dir is not None else None
        problems = []
        if (self.run_dir is None) == (self.ensemble_dir is None):
            problems.append(
                "give exactly one of --run_dir RUN or --ensemble_dir DIR (an ensemble folder, e.g. a "
                "library ensemble's)" + (", not both" if self.run_dir is not None else "")
            )
        for flag, folder in (("run_dir", self.run_dir), ("ensemble_dir", self.ensemble_dir)):
            if folder is not None and not folder.is_dir():
                problems.append(f"{flag} {folder}: folder does not exist")
        if self.combine is not None and self.combine not in COMBINATIONS:
            problems.append(f"combine must be one of {', '.join(COMBINATIONS)}, got {self.combine!r}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.coverage is not None and coverage_problem(self.coverage, "coverage"):
            problems.append(coverage_problem(self.coverage, "coverage"))
        if self.num_workers < 0 or self.preload_gb < 0:
            problems.append("num_workers and preload_gb must be >= 0")
        if not self.out.parent.is_dir():
            problems.append(f"out {self.out}: folder {self.out.parent} does not exist")
        for path in (self.out, self.metrics_path):
            if path.exists() and not self.overwrite:
                problems.append(f"out {path}: exists; pass --overwrite to replace it")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def metrics_path(self) -> Path:
        return self.out.with_name(self.out.stem + METRICS_SUFFIX)

    @property
    def report_dir(self) -> Path:
        """The ensemble folder whose report is applied."""
        return self.ensemble_dir if self.ensemble_dir is not None else RunFolder(self.run_dir).ensemble.root


@dataclass(frozen=True)
class EnsemblePlan:
    """What the ensemble job decided, as read from its report.

    Members are keyed as the report's weights are: ``str(seed)`` for a run, the candidate's name for a library.
    """

    keys: list[str]  # the members with weight > 0
    weights: np.ndarray  # (M,) over keys
    temperature: float
    combination: str
    tta: bool
    class_names: tuple[str, ...]
    weights_sha256: dict[str, str]  # by key: the best models the weights and temperature were fitted on
    report_path: Path
    coverage: float
    mondrian: bool
    val_probs: np.ndarray  # (N_val, C): the raw combination on validation, which calibrates the sets
    val_labels: np.ndarray
    run_dir: Path | None  # a run's ensemble: where its members are
    recorded: dict[str, dict[str, Any]]  # a library's: by name, the report's entry saying where each one is

    @property
    def is_library(self) -> bool:
        return self.run_dir is None

    @property
    def seeds(self) -> list[int]:
        return [int(key) for key in self.keys]


def read_plan(
    ensemble_dir: Path,
    combination: Combination | None,
    tta: bool | None,
    coverage: float | None = None,
    mondrian: bool | None = None,
    run_dir: Path | None = None,
) -> EnsemblePlan:
    """The members with weight > 0, their weights and the temperature from the folder's ``report.json``, and the
    validation predictions that calibrate the sets, from ``predictions.npz``."""
    folder = EnsembleFolder(ensemble_dir)
    path = folder.report_json
    report = read_json(path)
    if not isinstance(report, dict) or report.get("status") != "ok":
        raise CheckpointError(f"{path}: no successful ensemble report; run python -m jobs.ensemble_eval first")
    missing = [key for key in ("combinations", "conformal") if key not in report]
    if missing or any("weights_sha256" not in m for m in report.get("members", [])):
        what = ", ".join(missing) or "members' weights_sha256"
        raise CheckpointError(f"{path}: {what}: missing (written by an older jobs.ensemble_eval); rerun it")
    name = combination or report["combination"]["chosen"]
    entry = report["combinations"][name]
    weights = {str(key): float(w) for key, w in entry["weights"].items()}
    val_probs, val_labels = _validation_combination(folder.predictions, weights)
    used = {key: w for key, w in weights.items() if w > 0}
    conformal = report["conformal"]
    library = "library" in report
    return EnsemblePlan(
        keys=list(used),
        weights=np.array(list(used.values()), dtype=np.float64),
        temperature=float(entry["temperature"]),
        combination=name,
        tta=bool(report.get("tta")) if tta is None else tta,
        class_names=tuple(report["class_names"]),
        weights_sha256={_key(m, library): m["weights_sha256"] for m in report["members"]},
        report_path=path,
        coverage=conformal["coverage_requested"] if coverage is None else coverage,
        mondrian=conformal["mondrian"] if mondrian is None else mondrian,
        val_probs=val_probs,
        val_labels=val_labels,
        run_dir=None if library else Path(run_dir or report["run_dir"]),
        recorded={m["name"]: m for m in report["members"]} if library else {},
    )


def _key(member_entry: dict[str, Any], library: bool) -> str:
    return member_entry["name"] if library else str(member_entry["seed"])


def _validation_combination(path: Path, weights: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """The combination's raw probabilities on validation, from the members' saved in predictions.npz."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            keys = saved["names"].tolist() if "names" in saved.files else [str(s) for s in saved["seeds"].tolist()]
            member_probs, labels = saved["val_member_probs"], saved["val_labels"]
    except (OSError, KeyError, ValueError) as err:
        raise CheckpointError(
            f"{path}: cannot read the validation predictions that calibrate the prediction "
            f"sets ({err}); rerun python -m jobs.ensemble_eval"
        ) from None
    if set(weights) - set(keys):
        raise CheckpointError(
            f"{path}: holds members {keys}, not every member of the combination "
            f"({sorted(weights)}); rerun python -m jobs.ensemble_eval"
        )
    return combine(member_probs, np.array([weights.get(k, 0.0) for k in keys])), labels


def check_members_unchanged(plan: EnsemblePlan, members: list[found.Member]) -> None:
    """Each member's best model is still the one the report fitted; a later best would void its weights."""
    for key, member in zip(plan.keys, members):
        if member.weights_sha256 != plan.weights_sha256.get(key):
            raise CheckpointError(
                f"{member.label}: its best model ({member.folder.best.resolve().name}) "
                f"is not the one {plan.report_path} was fitted on; rerun python -m "
                f"jobs.ensemble_eval so the combination and temperature fit the members"
            )


def apply_ensemble(cfg: PredictConfig) -> dict[str, Any]:
    """Check everything, predict, write the CSV (and metrics when labels exist); return a summary."""
    plan, members, facts = check_prediction(cfg)
    member_probs, labels = _predict(cfg, members, plan)
    probs = combine(member_probs, plan.weights, plan.temperature)
    uncertainty = item_uncertainty(member_probs, plan.weights, plan.temperature)
    sets = prediction_sets(
        plan.val_probs, plan.val_labels, combine(member_probs, plan.weights), plan.coverage, plan.mondrian
    )
    write_predictions_csv(
        cfg.out,
        probs,
        uncertainty,
        plan.class_names,
        labels if facts.has_labels else None,
        probabilities_label(plan.temperature),
        sets,
    )
    members_used = {"candidates": plan.keys} if plan.is_library else {"seeds": plan.seeds}
    summary = {
        "input": str(cfg.input),
        "out": str(cfg.out),
        "num_items": facts.num_items,
        "combination": plan.combination,
        **members_used,
        "weights": plan.weights.tolist(),
        "temperature": plan.temperature,
        "probabilities": probabilities_label(plan.temperature),
        "tta": plan.tta,
        "has_labels": facts.has_labels,
        "coverage_requested": plan.coverage,
        "mondrian": plan.mondrian,
        "mean_set_size": float(sets.sum(axis=1).mean()),
    }
    if facts.has_labels:
        metrics = {**classification_metrics(labels, probs, plan.class_names), **calibration_metrics(labels, probs)}
        summary["metrics"] = metrics
        summary["prediction_sets"] = set_metrics(sets, labels, plan.class_names)
        write_json_atomically(cfg.metrics_path, summary)
    return summary


def check_prediction(cfg: PredictConfig) -> tuple[EnsemblePlan, list[found.Member], Any]:
    """Every check before any work: the run's plan, its members, and the input file against them."""
    plan = read_plan(cfg.report_dir, cfg.combine, cfg.tta, cfg.coverage, cfg.mondrian, cfg.run_dir)
    members = _library_members(plan) if plan.is_library else _run_members(plan)
    check_members_unchanged(plan, members)
    if members[0].class_names != plan.class_names:
        raise CheckpointError(
            f"{members[0].label}: classes {list(members[0].class_names)} disagree "
            f"with the ensemble report's {list(plan.class_names)}"
        )
    return plan, members, check_input_file(cfg.input, plan.class_names, members[0].feature_dim)


def _run_members(plan: EnsemblePlan) -> list[found.Member]:
    member_set = found.load_members(plan.run_dir, plan.seeds)
    if member_set.skipped:
        raise CheckpointError(
            "; ".join(f"member seed {s.seed} of the ensemble is not usable: {s.reason}" for s in member_set.skipped)
        )
    return member_set.members


def _library_members(plan: EnsemblePlan) -> list[found.Member]:
    """Each candidate from the folder the report recorded, judged finished as when it was selected."""
    members = []
    for name in plan.keys:
        try:
            members.append(load_candidate(plan.recorded[name], name))
        except found.SkipMember as skip:
            raise CheckpointError(
                f"candidate {name} of the library ensemble ({plan.recorded[name]['folder']}) is not usable: {skip}"
            ) from None
    found.check_members_agree(members)
    return members


def _predict(cfg: PredictConfig, members: list[found.Member], plan: EnsemblePlan) -> tuple[np.ndarray, np.ndarray]:
    split = FeatureSplit(cfg.input, preload_bytes=int(cfg.preload_gb * GIB))
    device = resolve_device(cfg.device)
    modes = list(TTA_MODES) if plan.tta else ["none"]
    loader = build_multi_view_loader(
        MultiViewItems(split, modes), cfg.batch_size, cfg.num_workers, pin_memory=device.type == "cuda"
    )
    with tqdm(total=len(split), disable=not shows_progress_bar(cfg.progress), unit="item", desc="predict") as bar:
        predictions = predict_members(
            [m.model.to(device) for m in members],
            loader,
            len(split),
            len(plan.class_names),
            device,
            on_batch=bar.update,
        )
    return predictions.member_probs, predictions.labels


def format_summary(summary: dict[str, Any]) -> str:
    """Lines for the terminal."""
    who = f"candidates {summary['candidates']}" if "candidates" in summary else f"seeds {summary['seeds']}"
    lines = [
        f"{summary['num_items']} items -> {summary['out']} (combination {summary['combination']}, "
        f"probabilities {summary['probabilities']}, {who}{', TTA' if summary['tta'] else ''})",
        f"prediction sets for {summary['coverage_requested']:.0%} coverage"
        f"{' per class' if summary['mondrian'] else ''}: mean size {summary['mean_set_size']:.2f}",
    ]
    if "metrics" in summary:
        m, sets = summary["metrics"], summary["prediction_sets"]
        lines.append(
            f"accuracy {m['accuracy']:.4f}, F1 weighted {m['f1_weighted']:.4f}, NLL {m['nll']:.4f}, "
            f"ECE {m['ece']:.4f}, Brier {m['brier']:.4f}, set coverage {sets['coverage']:.4f}"
        )
    return "".join(line + "\n" for line in lines)
