"""The scalar training state that a checkpoint's ``state.json`` carries."""

from dataclasses import asdict, dataclass, field
from typing import Any

# Bumped when the meaning of a saved field changes.
STATE_FORMAT = 1


@dataclass
class TrainingState:
    """Where a member is, in plain JSON-able values."""

    seed: int
    config_hash: str
    epoch: int = 0  # the epoch in progress (0-based)
    batches_done: int = 0  # batches of that epoch already trained
    global_step: int = 0
    loss_sum: float = 0.0  # this epoch's summed batch losses so far
    epoch_seconds: float = 0.0  # this epoch's training time so far, across restarts
    best_val_accuracy: float = -1.0
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False
    stop_reason: str = ""
    restarts: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TrainingState":
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**fields)
