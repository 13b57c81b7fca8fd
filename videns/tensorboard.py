"""A member's epoch scalars as TensorBoard event files in MEMBER/tensorboard/ (``--trainer.tensorboard true``).

Each epoch's scalars are written at the global step that ends it, and flushed
before that epoch's checkpoint is saved, so a checkpoint never covers scalars
that are not on disk. A resumed member replays the steps after its checkpoint;
its writer starts with ``purge_step`` = the checkpoint's step + 1, so TensorBoard
drops whatever the stopped run wrote after it (a SIGKILL before the commit)
instead of showing those steps twice. Needs ``pip install 'videns[tensorboard]'``.
"""

import importlib.util
import re
import time
from pathlib import Path
from typing import Any

# tag -> key of the epoch's history record
SCALARS = {
    "loss/train": "train_loss",
    "loss/val": "val_loss",
    "val/accuracy": "val_accuracy",
    "val/f1_macro": "val_f1_macro",
    "lr": "lr",
    "epoch_seconds": "seconds",
}
_EVENT_FILE_TIME = re.compile(r"^events\.out\.tfevents\.(\d+)\.")


def tensorboard_installed() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


class EpochScalars:
    """Writes each epoch's history record as scalars at its last global step."""

    def __init__(self, folder: Path, resumed_step: int):
        """``folder``: the member's event folder (:attr:`videns.folders.MemberFolder.tensorboard`)."""
        from torch.utils.tensorboard import SummaryWriter

        folder = Path(folder)
        _wait_past_newest_event_file(folder)
        self.writer = SummaryWriter(str(folder), purge_step=resumed_step + 1)

    def write(self, record: dict[str, Any], global_step: int) -> None:
        for tag, key in SCALARS.items():
            self.writer.add_scalar(tag, record[key], global_step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _wait_past_newest_event_file(folder: Path) -> None:
    """TensorBoard reads a folder's event files in name order, and names start with whole seconds:
    a new file must not share its second with the previous one, or they may be read in the wrong order."""
    stamps = [int(m.group(1)) for p in folder.glob("events.out.tfevents.*") if (m := _EVENT_FILE_TIME.match(p.name))]
    if stamps:
        while int(time.time()) <= max(stamps):
            time.sleep(0.05)
