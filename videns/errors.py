"""Errors that mean "the user gave us something wrong", as opposed to bugs, and how a process ends.

Entry points catch :class:`UserError` and print its message as one line, with
no traceback (:func:`user_errors_as_one_line`); anything else is a bug and keeps
its traceback. The exit codes below are the only ones our processes use.
"""

import signal
import sys
import traceback
from contextlib import contextmanager

EXIT_USER_ERROR = 2                     # bad input or flag, reported in one line
EXIT_CTRL_C = 128 + signal.SIGINT       # 130, as a shell reports Ctrl-C
EXIT_STOPPED = 128 + signal.SIGTERM     # 143: stopped by a signal after saving; the same command resumes


class UserError(Exception):
    """Bad input that the user can fix; the message names file, key and problem.

    Its text is always one line, also when it was raised in a DataLoader worker:
    torch re-raises it in the main process with the worker's traceback as its
    message, and only that traceback's last line is the user's message.
    """

    def __str__(self) -> str:
        return one_line(super().__str__())


class DataError(UserError):
    """An input data file is missing, malformed or inconsistent."""


class ConfigError(UserError):
    """A configuration value, or a combination of values, is invalid."""


class CheckpointError(UserError):
    """A checkpoint cannot be used (config mismatch, nothing valid on disk)."""


class StorageError(UserError):
    """A folder cannot be written or locked: read-only, full, over quota, or already held by another writer."""


class LockHeld(StorageError):
    """Another process holds the folder's lock: a second writer must not touch it."""


def one_line(message: str) -> str:
    """A message on one line; of a relayed traceback, only the message of its last line."""
    lines = [line for line in message.splitlines() if line.strip()]
    if len(lines) > 1 and any("Traceback (most recent call last)" in line for line in lines):
        _, _, last = lines[-1].partition(": ")  # "videns.errors.DataError: <message>"
        return last.strip()
    return " ".join(" ".join(lines).split())


@contextmanager
def user_errors_as_one_line(prog: str):
    """Print a UserError as ``prog: error: <message>`` and exit 2; let bugs keep their traceback."""
    try:
        yield
    except UserError as err:
        # The frames the error came through hold the DataLoaders: cleared now, their workers
        # shut down. Left to the exit, the workers ignore the SIGTERM it sends and it waits forever.
        traceback.clear_frames(err.__traceback__)
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
