"""One function call as one SLURM job (the bench, a prediction): submitted, optionally waited for.

Such a job is not requeued: cut short, it is simply run again. How it ended goes
to JSON beside submitit's files, so waiting never unpickles its result.
"""

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jsonargparse import ActionYesNo, ArgumentParser, Namespace

from slurm.cluster import (
    LOG_PATTERN,
    ClusterConfig,
    add_cluster_arguments,
    site_defaults,
    slurm_executor,
    slurm_parameters,
)
from slurm.queue import wait_while_active
from slurm.tasks import outcome_recorded, task_succeeded
from videns.cli import is_true
from videns.errors import ExitCode

WAIT_POLL_S = 2.0
SUBMIT_OPTIONS = ("submit", "wait", "site", "slurm")  # what add_submit_options adds; not the job's own config


def add_submit_options(parser: ArgumentParser, what: str) -> None:
    """``--submit``, ``--wait``, ``--site`` and ``--slurm.*`` on an entry point's jsonargparse parser."""
    parser.add_argument(
        "--submit",
        action=ActionYesNo,
        default=False,
        help=f"Run {what} as one SLURM job (a member's slice and cores) instead of here.",
    )
    parser.add_argument(
        "--wait", action=ActionYesNo, default=False, help="With --submit: wait for the job, then print what it printed."
    )
    add_cluster_arguments(parser)


DECIDING_SUBMIT = ("submit", "site")  # the options submit_defaults reads


def submit_defaults(decided: argparse.Namespace, base: Namespace) -> None:
    """With --submit, the site profile's resources; without, none are read."""
    if is_true(decided.submit):
        site_defaults(decided, base)


class LoggedCall:
    """``function(argument)`` inside the job, with logging set up and its outcome recorded."""

    def __init__(self, function: Callable[[Any], int], argument: Any):
        self.function = function
        self.argument = argument

    def __call__(self) -> int:
        from videns.logs import setup_logging

        with outcome_recorded():
            setup_logging()
            return self.function(self.argument)


def submit_single(call: LoggedCall, slurm: ClusterConfig, job_name: str, logs: Path, wait: bool) -> ExitCode:
    """Submit ``call``; with ``wait``, print the job's stdout once it ended. 0 when it succeeded (or was submitted)."""
    params = slurm_parameters(slurm, job_name)
    params["additional_parameters"].pop("requeue", None)  # a job cut short is rerun, not continued
    job = slurm_executor(logs / LOG_PATTERN, slurm, params).submit(call)
    print(f"{job_name} job {job.job_id} submitted; log: {logs / job.job_id}")
    if not wait:
        return ExitCode.OK
    wait_while_active([job.job_id], poll_s=WAIT_POLL_S)
    print(job.stdout() or "", end="")
    return ExitCode.OK if task_succeeded(job) else ExitCode.FAILED
