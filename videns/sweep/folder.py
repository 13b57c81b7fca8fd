"""A sweep folder's settings: the search and how many trials to finish (``sweep.json``).

The folder's paths come from :class:`videns.folders.SweepFolder`; this adds
what its settings file means.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from videns import folders
from videns.errors import ConfigError
from videns.io import write_text_atomically
from videns.sweep.spec import SweepSpec

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


class SweepFolder(folders.SweepFolder):
    """A sweep folder's paths, and its settings read and written."""

    def trial_dir(self, number: int) -> Path:
        return self.trial(number).root

    def settings(self) -> SweepSettings:
        try:
            return SweepSettings.from_json(json.loads(self.settings_file.read_text()))
        except OSError:
            raise ConfigError(f"{self.root} is not a sweep run folder (no {self.settings_file.name})") from None

    def write_settings(self, settings: SweepSettings) -> None:
        write_text_atomically(self.settings_file, json.dumps(settings.to_json(), indent=1))

    def base_resolved(self) -> dict[str, Any]:
        return yaml.safe_load(self.base_config.read_text())
