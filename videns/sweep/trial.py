"""One trial = one member: its config, its per-epoch reports to the pruner, its result."""

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import yaml

from videns.config import MemberConfig, parse_member_config
from videns.folders import SweepFolder, TrialFolder, make_private
from videns.io import read_json, read_jsonl, write_text_atomically
from videns.logs import FORMAT
from videns.sweep.space import apply_params

log = logging.getLogger(__name__)

# The history record's key for each objective; the fallback is used (with a warning)
# while history records lack the dataset-level macro recall.
EPOCH_KEY = {"accuracy": "val_accuracy", "balanced_accuracy": "val_balanced_accuracy"}
EPOCH_FALLBACK = {"balanced_accuracy": "val_f1_macro"}
_warned_fallback: set[str] = set()


def trial_config(folder: SweepFolder, number: int, params: dict[str, Any]) -> MemberConfig:
    """The base config with the trial's params applied, saved as ``trial_config.yaml`` and parsed."""
    resolved = apply_params(folder.base_resolved(), params)
    resolved["out_dir"] = str(folder.trial(number).root)
    path = folder.trial(number).trial_config
    write_text_atomically(path, yaml.safe_dump(resolved, sort_keys=False))
    return parse_member_config(["--config", str(path)])


def epoch_value(record: dict[str, Any], objective: str) -> float:
    """The objective of one epoch's history record (validation split)."""
    key = EPOCH_KEY[objective]
    if key in record:
        return float(record[key])
    fallback = EPOCH_FALLBACK[objective]
    if objective not in _warned_fallback:
        _warned_fallback.add(objective)
        log.warning(
            "history records carry no %s: the pruner sees %s per epoch instead; the trial's "
            "value is still %s, read from its best checkpoint",
            key,
            fallback,
            objective,
        )
    return float(record[fallback])


def final_value(trial_dir: Path, objective: str) -> float | None:
    """The objective on the validation split at the member's best checkpoint (kept by val accuracy)."""
    best = read_json(TrialFolder(trial_dir).best_meta) or {}
    value = (best.get("val_metrics") or {}).get(objective)
    return None if value is None else float(value)


def read_history(trial_dir: Path) -> list[dict[str, Any]]:
    return read_jsonl(TrialFolder(trial_dir).history)


class EpochReporter:
    """``on_epoch_end`` hook: report the objective at each epoch and prune when the pruner says so.

    Raising TrialPruned here is safe: train_member calls the hook after the epoch's
    checkpoint is saved, and lets the error go on only once that save is on disk.
    """

    def __init__(self, trial: optuna.Trial, objective: str, max_epochs: int, reported: set[int] | None = None):
        self.trial, self.objective, self.max_epochs = trial, objective, max_epochs
        self.reported = set(reported or ())  # steps the study already holds (a resumed trial)

    def __call__(self, record: dict[str, Any]) -> None:
        self.report(record)
        if record["epoch"] < self.max_epochs and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {record['epoch']}")

    def report(self, record: dict[str, Any]) -> None:
        if record["epoch"] not in self.reported:
            self.trial.report(epoch_value(record, self.objective), record["epoch"])
            self.reported.add(record["epoch"])

    def catch_up(self, trial_dir: Path) -> None:
        """After a restart: report the epochs trained before it that never reached the study."""
        history = read_history(trial_dir)
        for record in history:
            self.report(record)
        if history and history[-1]["epoch"] < self.max_epochs and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {history[-1]['epoch']} (on resume)")


def write_trial_end(trial_dir: Path, record: dict[str, Any]) -> None:
    write_text_atomically(TrialFolder(trial_dir).end, json.dumps(record, indent=1))


@contextmanager
def trial_log(trial_dir: Path) -> Iterator[None]:
    """Everything logged while this trial trains also goes to its ``train.log``."""
    make_private(trial_dir)
    handler = logging.FileHandler(TrialFolder(trial_dir).log)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
