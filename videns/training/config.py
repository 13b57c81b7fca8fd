"""The training loop's own settings."""

from dataclasses import dataclass
from typing import Literal

from videns.errors import ConfigError
from videns.logs import Progress
from videns.tensorboard import tensorboard_installed


@dataclass
class TrainerConfig:
    """Loop settings (the reference recipe: batch 48, 150 epochs, patience 25).

    Args:
        batch_size: training batch size.
        eval_batch_size: batch size for validation and test passes.
        max_epochs: stop after this many epochs.
        patience: stop after this many epochs without a val-accuracy improvement; 0 disables early stopping.
        device: auto picks cuda when available.
        precision: bf16 runs forward passes under bf16 autocast, on CUDA and on CPU alike; recurrent layers stay fp32.
        progress: a progress bar over batches: auto shows one only when stderr is a terminal.
        gpu_memory_gb: cap this process's CUDA caching allocator at this many GB (0: no cap), so that members
            sharing one GPU each stay within a slice's worth, as on a MIG slice of that size. Ignored on CPU.
        monitor_minutes: interval of the resource monitor's samples.
        tensorboard: write each epoch's losses, val accuracy and macro F1, lr and seconds as TensorBoard
            events into MEMBER/tensorboard/ (needs pip install 'videns[tensorboard]').
    """

    batch_size: int = 48
    eval_batch_size: int = 128
    max_epochs: int = 150
    patience: int = 25
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    progress: Progress = "auto"
    gpu_memory_gb: float = 0.0
    monitor_minutes: float = 30.0
    tensorboard: bool = False

    def __post_init__(self):
        problems = [
            f"trainer.{name} must be >= {low}, got {value}"
            for name, value, low in (
                ("batch_size", self.batch_size, 1),
                ("eval_batch_size", self.eval_batch_size, 1),
                ("max_epochs", self.max_epochs, 1),
                ("patience", self.patience, 0),
            )
            if value < low
        ]
        if self.gpu_memory_gb < 0:
            problems.append(f"trainer.gpu_memory_gb must be >= 0, got {self.gpu_memory_gb}")
        if self.monitor_minutes <= 0:
            problems.append(f"trainer.monitor_minutes must be > 0, got {self.monitor_minutes}")
        if self.tensorboard and not tensorboard_installed():
            problems.append("trainer.tensorboard needs the tensorboard package: pip install 'videns[tensorboard]'")
        if problems:
            raise ConfigError("; ".join(problems))
