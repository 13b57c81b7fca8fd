"""Logging for batch jobs: one line per event, to stderr and optionally a file."""

import logging
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(log_file: Path | None = None, level: int = logging.INFO) -> None:
    """Send videns' logs to stderr (and append them to ``log_file``)."""
    root = logging.getLogger()
    root.setLevel(level)
    if not any(getattr(h, "_videns", False) for h in root.handlers):
        root.addHandler(_tagged(logging.StreamHandler()))
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        if not any(getattr(h, "baseFilename", None) == str(Path(log_file).resolve()) for h in root.handlers):
            root.addHandler(_tagged(logging.FileHandler(log_file)))


def _tagged(handler: logging.Handler) -> logging.Handler:
    handler.setFormatter(logging.Formatter(FORMAT))
    handler._videns = True
    return handler
