"""The sweep's readable outputs: trials.csv, trials_top10.md and best_config.yaml.

Written atomically (a reader never sees half a file) by every worker when it
finishes and by the launcher at the end, always from the study's current state.
"""

import csv
import io
import logging
from dataclasses import dataclass
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from videns.folders import SweepFolder
from videns.io import read_json, write_text_atomically
from videns.sweep.settings import SweepSettings
from videns.sweep.trial import read_history

log = logging.getLogger(__name__)
TOP_K = 10
COLUMNS = (
    "number",
    "state",
    "value",
    "best_epoch",
    "epochs",
    "seconds",
    "restarts",
    "val_accuracy",
    "val_balanced_accuracy",
    "val_f1_macro",
)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass
class ExportSummary:
    """Counts by state and the best trial, as written."""

    counts: dict[str, int]
    best_number: int | None
    best_value: float | None

    @property
    def finished(self) -> int:
        return sum(self.counts.get(s.name, 0) for s in FINISHED)


def trial_row(folder: SweepFolder, trial: FrozenTrial, keys: list[str]) -> dict[str, Any]:
    """One trial as a flat row: state, value, the member's best epoch and metrics, its params."""
    trial_folder = folder.trial(trial.number)
    best = read_json(trial_folder.best_meta) or {}
    metrics = best.get("val_metrics") or {}
    progress = trial_folder.progress()
    history = read_history(trial_folder.root)
    row = {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value,
        "best_epoch": best.get("epoch"),
        "epochs": len(history),
        "seconds": round(sum(h.get("seconds", 0.0) for h in history), 3),
        "restarts": progress.get("restarts", 0),
        "val_accuracy": metrics.get("accuracy"),
        "val_balanced_accuracy": metrics.get("balanced_accuracy"),
        "val_f1_macro": metrics.get("f1_macro"),
    }
    return row | {key: trial.params.get(key) for key in keys}


def export_results(folder: SweepFolder, study: optuna.Study, settings: SweepSettings) -> ExportSummary:
    """Rewrite trials.csv, trials_top10.md and (once a trial is COMPLETE) best_config.yaml."""
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    keys = settings.spec.keys
    rows = [trial_row(folder, t, keys) for t in trials]
    write_text_atomically(folder.trials_csv, _csv(rows, [*COLUMNS, *keys]))
    complete = sorted(
        (r for r in rows if r["state"] == "COMPLETE" and r["value"] is not None),
        key=lambda r: (-r["value"], r["number"]),
    )
    counts = {s.name: sum(1 for t in trials if t.state == s) for s in TrialState}
    write_text_atomically(folder.top10, _top10_markdown(folder, settings, complete[:TOP_K], counts, keys))
    best = complete[0] if complete else None
    if best is not None:
        _write_best_config(folder, settings, best)
    return ExportSummary({k: v for k, v in counts.items() if v}, best and best["number"], best and best["value"])


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return out.getvalue()


def _top10_markdown(
    folder: SweepFolder, settings: SweepSettings, top: list[dict[str, Any]], counts: dict[str, int], keys: list[str]
) -> str:
    objective = settings.spec.objective
    states = ", ".join(f"{n} {name}" for name, n in counts.items() if n) or "no trials yet"
    lines = [
        f"# Sweep {folder.root.name}: top {len(top)} by validation {objective}",
        "",
        f"{settings.trials} trials requested; {states}.",
        "",
        "| rank | trial | " + objective + " | val accuracy | best epoch | epochs | " + " | ".join(keys) + " |",
        "|" + "---|" * (6 + len(keys)),
    ]
    for rank, row in enumerate(top, 1):
        cells = [
            rank,
            row["number"],
            _fmt(row["value"]),
            _fmt(row["val_accuracy"]),
            row["best_epoch"],
            row["epochs"],
            *(_fmt(row[k]) for k in keys),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("-" if value is None else str(value))


def _write_best_config(folder: SweepFolder, settings: SweepSettings, best: dict[str, Any]) -> None:
    config = yaml.safe_load(folder.trial(best["number"]).trial_config.read_text())
    config["out_dir"] = str(folder.best_member)
    params = ", ".join(f"{k}={best[k]}" for k in settings.spec.keys if best[k] is not None)
    header = (
        f"# Best trial of sweep {folder.root}: trial {best['number']}, validation "
        f"{settings.spec.objective} {best['value']:.4f} (best epoch {best['best_epoch']}).\n"
        f"# Its params: {params}\n"
        f"# A full member config: python -m jobs.train --config {folder.best_config}\n"
        f"#                    or python -m jobs.launch --array 4 --config {folder.best_config}\n"
    )
    write_text_atomically(folder.best_config, header + yaml.safe_dump(config, sort_keys=False))
