"""A sweep's settings: the search and how many trials to finish (what ``sweep.json`` holds).

:class:`videns.folders.SweepFolder` reads and writes them.
"""

from dataclasses import dataclass
from typing import Any

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
        return {
            "spec": self.spec.to_json(),
            "trials": self.trials,
            "heartbeat_s": self.heartbeat_s,
            "stale_after_s": self.stale_after_s,
            "study_name": STUDY_NAME,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "SweepSettings":
        return cls(
            spec=SweepSpec.from_json(raw["spec"]),
            trials=int(raw["trials"]),
            heartbeat_s=float(raw.get("heartbeat_s", 30.0)),
            stale_after_s=float(raw.get("stale_after_s", 300.0)),
        )
