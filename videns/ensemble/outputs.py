"""An ensemble folder's files (a run's RUN/ensemble/ or a library ensemble's): predictions, plots, resources and
the report, written into a staging folder and moved into place with report.json last.

An earlier report survives until a complete new set exists; files an earlier
evaluation wrote and this one does not are removed afterwards.
"""

import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from videns.ensemble import members as found
from videns.ensemble import report as rep
from videns.ensemble.combine import combine
from videns.ensemble.member_probs import Predictions
from videns.ensemble.selective import aurc, risk_coverage
from videns.ensemble.trust import Chosen
from videns.ensemble.uncertainty import write_predictions_csv
from videns.folders import EnsembleFolder
from videns.io import move_into_place, replacing, write_json_atomically, write_text_atomically
from videns.metrics import expected_calibration_error, reliability_bins
from videns.plots import plot_confusion_matrix, plot_reliability_diagram, plot_risk_coverage, plot_training_curves

log = logging.getLogger(__name__)

OUTPUT_FILES = EnsembleFolder.OUTPUTS

Writer = Callable[[Path], Any]


def ensemble_writers(
    report: dict[str, Any],
    members: list[found.Member],
    val: Predictions,
    test: Predictions,
    chosen: Chosen,
    class_names: tuple[str, ...],
    resources: Any,
    title: str,
) -> dict[str, Writer]:
    """Every file beside the report, by name; ``title`` heads the confusion matrix."""
    return {
        EnsembleFolder.PREDICTIONS: lambda path: save_predictions(path, val, test, chosen, members),
        EnsembleFolder.PREDICTIONS_CSV: lambda path: write_predictions_csv(
            path, chosen.calibrated, chosen.uncertainty, class_names, test.labels, chosen.probabilities, chosen.sets
        ),
        EnsembleFolder.RELIABILITY_PNG: lambda path: _plot_reliability(val, test, chosen, path),
        EnsembleFolder.RISK_COVERAGE_PNG: lambda path: _plot_risk_coverage(test, chosen, path),
        EnsembleFolder.CONFUSION_PNG: lambda path: plot_confusion_matrix(
            np.asarray(report["ensemble"]["confusion_matrix"]), class_names, path, title=title
        ),
        EnsembleFolder.CURVES_PNG: lambda path: _plot_curves(members, path),
        EnsembleFolder.RESOURCES_JSON: json_writer(resources),
    }


def save_predictions(
    path: Path, val: Predictions, test: Predictions, chosen: Chosen, members: list[found.Member]
) -> None:
    """Members' own probabilities untouched; ``ensemble_probs`` is the combination before, ``calibrated_probs`` after T.

    A library's candidates are named (``names``, in the members' order); seeds alone would not tell them apart.
    """
    named = {"names": np.asarray([m.name for m in members], dtype=np.str_)} if any(m.name for m in members) else {}
    with replacing(path) as tmp, open(tmp, "wb") as f:  # an open file keeps numpy from appending another .npz
        np.savez(
            f,
            member_probs=test.member_probs,
            ensemble_probs=chosen.probs,
            calibrated_probs=chosen.calibrated,
            labels=test.labels,
            seeds=np.asarray([m.seed for m in members], dtype=np.int64),
            weights=chosen.weights,
            temperature=np.float64(chosen.temperature),
            val_member_probs=val.member_probs,
            val_labels=val.labels,
            **named,
        )


def _plot_reliability(val: Predictions, test: Predictions, chosen: Chosen, path: Path) -> None:
    panels = {}
    scales = [("raw", 1.0)] + (
        [(f"T = {chosen.temperature:.2f}", chosen.temperature)] if chosen.temperature != 1.0 else []
    )
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
    for label, confidence in (
        ("max probability", chosen.calibrated.max(axis=1)),
        ("mutual information (low first)", -chosen.uncertainty["mutual_information"]),
    ):
        coverage, risk = risk_coverage(confidence, correct)
        curves[f"{label}, AURC {aurc(confidence, correct):.4f}"] = (coverage, risk)
    plot_risk_coverage(curves, path, title=f"Risk-coverage of {chosen.name} on test")


def _plot_curves(members: list[found.Member], path: Path) -> None:
    histories = {m.short_label: found.read_history(m.folder) for m in members}
    histories = {label: h for label, h in histories.items() if h}
    if not histories:
        log.warning("no member has a training history; %s not drawn", path.name)
        return
    try:
        plot_training_curves(histories, path)
    except ValueError as err:  # a malformed history should not cost the evaluation
        log.warning("%s not drawn: %s", path.name, err)


def json_writer(data: Any) -> Writer:
    return lambda path: write_json_atomically(path, data)


def publish(out_dir: Path, report: dict[str, Any], writers: dict[str, Writer]) -> None:
    """Write every output into a staging folder, then move them into ``out_dir`` with report.json last."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".staging-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    staging.mkdir()
    try:
        for name, write in writers.items():
            write(staging / name)
        written = [name for name in writers if (staging / name).exists()]
        report["files"] = sorted([*written, EnsembleFolder.REPORT_MD, EnsembleFolder.REPORT_JSON])
        write_text_atomically(staging / EnsembleFolder.REPORT_MD, rep.format_markdown(report))
        write_json_atomically(staging / EnsembleFolder.REPORT_JSON, report)
        for name in OUTPUT_FILES:  # report.json is last, and each rename is on disk before the next
            if (staging / name).exists():
                move_into_place(staging / name, out_dir / name)
        for name in set(OUTPUT_FILES) - set(report["files"]):
            (out_dir / name).unlink(missing_ok=True)  # an earlier run's file that does not describe this one
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("wrote %s", ", ".join(report["files"]))
