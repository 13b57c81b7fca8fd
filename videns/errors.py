"""Errors that mean "the user gave us something wrong", as opposed to bugs, and how a process ends.

Entry points catch :class:`UserError` and print its message as one line, with
no traceback (:func:`user_errors_as_one_line`); anything else is a bug and keeps
its traceback. The exit codes below are the only ones our processes use.
"""

import signal
import sys
from contextlib import contextmanager

EXIT_USER_ERROR = 2                     # bad input or flag, reported in one line
EXIT_CTRL_C = 128 + signal.SIGINT       # 130, as a shell reports Ctrl-C
EXIT_STOPPED = 128 + signal.SIGTERM     # 143: stopped by a signal after saving; the same command resumes


class UserError(Exception):
    """Bad input that the user can fix; the message names file, key and problem."""


class DataError(UserError):
    """An input data file is missing, malformed or inconsistent."""


class ConfigError(UserError):
    """A configuration value, or a combination of values, is invalid."""


class CheckpointError(UserError):
    """A checkpoint cannot be used (config mismatch, nothing valid on disk)."""


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


@contextmanager
def user_errors_as_one_line(prog: str):
    """Print a UserError as ``prog: error: <message>`` and exit 2; let bugs keep their traceback."""
    try:
        yield
    except UserError as err:
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
