"""Logging for batch jobs: one line per event, to stderr and optionally a file."""

import logging
import sys
from pathlib import Path
from typing import Literal

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
Progress = Literal["auto", "bar", "off"]
# ``log.error(..., extra=FILE_ONLY)``: for the log files only, when the caller raises the same line as an
# error, which its entry point prints on stderr; there it would stand twice.
FILE_ONLY = {"file_only": True}


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

    A file that cannot be written (disk full, read-only) costs its lines, not the
    run: one line on stderr says so, instead of a traceback per record. The file is
    opened again for the next record, so that once there is room again (a failed
    write frees what it took) the lines, the failure's own above all, reach it.
    """

    def __init__(self, log_file: Path):
        super().__init__(log_file, delay=True)
        self._said_it_fails = False

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            super().emit(record)
        except OSError:  # opening the file (writing it goes to handleError)
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:
        err = sys.exc_info()[1]
        if not isinstance(err, OSError):
            super().handleError(record)
            return
        self._drop_stream()
        if not self._said_it_fails:
            self._said_it_fails = True
            # Not through logging: that is what fails.
            print(
                f"{self.baseFilename}: cannot write this log ({err.strerror or err}); until it can, "
                "its lines go to stderr only",
                file=sys.stderr,
            )

    def _drop_stream(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            try:
                stream.close()  # flushes what the failed write left buffered: that may fail again
            except OSError:
                pass


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now, not the one it was built with.

    In-process callers (tests, notebooks) swap sys.stderr; a handler holding the
    old, possibly closed, stream would fail on every later record.
    """

    def __init__(self):
        super().__init__()
        self.addFilter(lambda record: not getattr(record, "file_only", False))

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
