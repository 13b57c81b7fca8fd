"""The sweep's run folder: everything a worker needs is found here, by path.

    RUN/sweep.json                 the search (space, objective, sampler, pruner), N trials, study name
    RUN/base_config.yaml           resolved member config every trial starts from
    RUN/study.journal              optuna's JournalStorage log (plain file; no database server)
    RUN/trials/trial_<n>/          one member per trial (train_member's files) plus
        trial_config.yaml          its full member config; claim.json, who trains it; trial.json, its end
    RUN/trials.csv                 one row per trial
    RUN/trials_top10.md            the ten best finished trials
    RUN/best_config.yaml           the best trial's member config, for jobs.train / jobs.launch
"""

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from videns.errors import ConfigError
from videns.sweep.spec import SweepSpec

SETTINGS_FILE = "sweep.json"
BASE_CONFIG = "base_config.yaml"
JOURNAL_FILE = "study.journal"
TRIALS_DIR = "trials"
TRIAL_CONFIG = "trial_config.yaml"
TRIAL_END = "trial.json"
CLAIM_FILE = "claim.json"
SCHEDULE_LOCK = ".schedule"
TRIALS_CSV = "trials.csv"
TOP10_MD = "trials_top10.md"
BEST_CONFIG = "best_config.yaml"
BEST_MEMBER_DIR = "best_member"
STUDY_NAME = "sweep"


@dataclass
class SweepSettings:
    """What ``sweep.json`` holds: the search and how many trials to finish."""

    spec: SweepSpec
    trials: int
    heartbeat_s: float = 30.0
    stale_after_s: float = 300.0

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.spec.to_json(), "trials": self.trials, "heartbeat_s": self.heartbeat_s,
                "stale_after_s": self.stale_after_s, "study_name": STUDY_NAME}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "SweepSettings":
        return cls(spec=SweepSpec.from_json(raw["spec"]), trials=int(raw["trials"]),
                   heartbeat_s=float(raw.get("heartbeat_s", 30.0)),
                   stale_after_s=float(raw.get("stale_after_s", 300.0)))


class SweepFolder:
    """Paths of one sweep run folder."""

    def __init__(self, root: Path):
        self.root = Path(root).absolute()

    settings_file = property(lambda self: self.root / SETTINGS_FILE)
    base_config = property(lambda self: self.root / BASE_CONFIG)
    journal = property(lambda self: self.root / JOURNAL_FILE)
    trials_dir = property(lambda self: self.root / TRIALS_DIR)
    schedule_lock = property(lambda self: self.trials_dir / SCHEDULE_LOCK)
    trials_csv = property(lambda self: self.root / TRIALS_CSV)
    top10 = property(lambda self: self.root / TOP10_MD)
    best_config = property(lambda self: self.root / BEST_CONFIG)
    best_member = property(lambda self: self.root / BEST_MEMBER_DIR)

    def trial_dir(self, number: int) -> Path:
        return self.trials_dir / f"trial_{number}"

    def exists(self) -> bool:
        return self.settings_file.is_file()

    def settings(self) -> SweepSettings:
        try:
            return SweepSettings.from_json(json.loads(self.settings_file.read_text()))
        except OSError:
            raise ConfigError(f"{self.root} is not a sweep run folder (no {SETTINGS_FILE})") from None

    def write_settings(self, settings: SweepSettings) -> None:
        write_text_atomically(self.settings_file, json.dumps(settings.to_json(), indent=1))

    def base_resolved(self) -> dict[str, Any]:
        return yaml.safe_load(self.base_config.read_text())


def write_text_atomically(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of either."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}")
    tmp.write_text(text)
    os.replace(tmp, path)
