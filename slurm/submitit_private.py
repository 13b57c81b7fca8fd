"""Every use of submitit's private API, one small function each, for the range pinned in pyproject.toml.

submitit has no public call for either need: rendering an sbatch script without
submitting it (``--dry_run``), and signalling a local job's controller with
SIGTERM (``LocalJob.cancel`` sends SIGINT, which our members ignore, and then
the controller SIGKILLs them mid-step). ``tests/test_submitit_private.py`` fails
when a submitit release changes either.
"""

import signal
from pathlib import Path
from typing import Any

import submitit
from submitit.slurm.slurm import _make_sbatch_string


def sbatch_script(command: str, folder: Path, array_size: int | None, params: dict[str, Any]) -> str:
    """The script ``SlurmExecutor`` would submit for ``params`` (its ``update_parameters`` keywords)."""
    return _make_sbatch_string(command=command, folder=folder, map_count=array_size, **params)


def terminate_local_job(job: submitit.local.local.LocalJob) -> bool:
    """SIGTERM to a running local job's controller, which forwards it to the task; False if it has ended."""
    process = job._process
    if process is None or process.poll() is not None:
        return False
    process.send_signal(signal.SIGTERM)
    return True
