"""Logging for batch jobs: one line per event, to stderr and optionally a file."""

import logging
import sys
from pathlib import Path
from typing import Literal

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
Progress = Literal["auto", "bar", "off"]


def shows_progress_bar(progress: Progress) -> bool:
    """``bar`` always; ``auto`` only on a terminal, since a batch job's log has its own lines per epoch."""
    return progress == "bar" or (progress == "auto" and sys.stderr.isatty())


def setup_logging(log_file: Path | None = None, level: int = logging.INFO) -> None:
    """Send videns' logs to stderr (and append them to ``log_file``)."""
    root = logging.getLogger()
    root.setLevel(level)
    if not any(getattr(h, "_videns", False) for h in root.handlers):
        root.addHandler(_tagged(_StderrHandler()))
    if log_file is not None:
        if not any(getattr(h, "baseFilename", None) == str(Path(log_file).resolve()) for h in root.handlers):
            root.addHandler(_tagged(_LazyFileHandler(log_file)))


class _LazyFileHandler(logging.FileHandler):
    """Creates its folder and file only with the first record.

    A job that stops on bad input before logging anything leaves no trace on disk.
    """

    def __init__(self, log_file: Path):
        super().__init__(log_file, delay=True)

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now, not the one it was built with.

    In-process callers (tests, notebooks) swap sys.stderr; a handler holding the
    old, possibly closed, stream would fail on every later record.
    """

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def _tagged(handler: logging.Handler) -> logging.Handler:
    handler.setFormatter(logging.Formatter(FORMAT))
    handler._videns = True
    return handler
