"""Errors that mean "the user gave us something wrong", as opposed to bugs, and how a process ends.

Entry points catch :class:`UserError` and print its message as one line, with
no traceback (:func:`user_errors_as_one_line`); anything else is a bug and keeps
its traceback. :class:`ExitCode` holds the only exit codes our processes use.
"""

import enum
import signal
import sys
import traceback
from contextlib import contextmanager


class ExitCode(enum.IntEnum):
    """How a process of ours ends; each member's ``description`` says when."""

    description: str

    def __new__(cls, value: int, description: str) -> "ExitCode":
        member = int.__new__(cls, value)
        member._value_ = value
        member.description = description
        return member

    OK = 0, "Done: everything asked for finished."
    FAILED = (
        1,
        (
            "Something ran and failed: a member or the ensemble job (jobs.launch, jobs.status), a submitted "
            "job, a sweep worker or a sweep short of its finished trials (jobs.sweep), a part of jobs.gpu_check."
        ),
    )
    USER_ERROR = (
        2,
        (
            "A problem the user can fix, in one line naming file, key and problem, without a traceback: "
            "bad input, flag or config, a folder others can write, a held lock, a full disk."
        ),
    )
    NOT_FINISHED = (
        3,
        (
            "jobs.status, and jobs.launch --wait which ends with its table: nothing failed, but not "
            "everything is done: a job is queued or running, a local member stopped (relaunch to resume "
            "it), or SLURM did not answer."
        ),
    )
    CTRL_C = (
        128 + signal.SIGINT,
        (
            "Ctrl-C (130, as a shell reports it): running members and trials saved a "
            "checkpoint; the same command resumes."
        ),
    )
    STOPPED = (
        128 + signal.SIGTERM,
        ("Stopped by SIGTERM or SIGUSR2 (143) after saving a checkpoint; the same command resumes."),
    )


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
        sys.exit(ExitCode.USER_ERROR)
