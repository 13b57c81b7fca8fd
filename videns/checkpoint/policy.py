"""When to save: every N steps, every M minutes, at epoch ends and on signal."""

import time
from dataclasses import dataclass
from typing import Literal

from videns.errors import ConfigError


@dataclass
class CheckpointConfig:
    """Checkpoint cadence and resume behaviour.

    Args:
        every_steps: save every this many optimizer steps; 0 turns step-based saves off.
        every_minutes: save when this many minutes passed since the last save; 0 turns it off.
            Bounds the work lost to a SIGKILL; signals and epoch ends always save.
        keep: how many of the newest checkpoints to keep.
        resume: auto continues from the newest valid checkpoint in the member folder; never starts over
            (refusing to overwrite an existing one).
        force: resume even when the checkpoint was written under a different config.
        background: write checkpoints in a background thread: training waits only for a copy of the
            state into host memory (kept for reuse: one extra copy of model + optimizer state), and
            signals, the end of training and the epoch-end hook still wait until it is on disk.
    """

    every_steps: int = 0
    every_minutes: float = 5.0
    keep: int = 2
    resume: Literal["auto", "never"] = "auto"
    force: bool = False
    background: bool = True

    def __post_init__(self):
        if self.every_steps < 0 or self.every_minutes < 0:
            raise ConfigError(
                f"checkpoint.every_steps and every_minutes must be >= 0, got {self.every_steps}, {self.every_minutes}"
            )
        if self.keep < 1:
            raise ConfigError(f"checkpoint.keep must be >= 1, got {self.keep}")


class SavePolicy:
    """Decides whether a periodic save is due after a step."""

    def __init__(self, cfg: CheckpointConfig, clock=time.monotonic):
        self.cfg = cfg
        self.clock = clock
        self.last_save_time = clock()
        self.last_save_step = 0

    def due(self, global_step: int) -> bool:
        by_steps = self.cfg.every_steps > 0 and global_step - self.last_save_step >= self.cfg.every_steps
        by_time = self.cfg.every_minutes > 0 and self.clock() - self.last_save_time >= self.cfg.every_minutes * 60
        return by_steps or by_time

    def saved(self, global_step: int) -> None:
        self.last_save_time = self.clock()
        self.last_save_step = global_step
