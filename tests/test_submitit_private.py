"""The two uses of submitit's private API still work on the installed submitit, within the pinned range."""

import inspect
import time
from importlib.metadata import version
from pathlib import Path

import submitit
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from submitit.slurm.slurm import _make_sbatch_string

from slurm.cluster import ClusterConfig, slurm_parameters
from slurm.submitit_private import sbatch_script, terminate_local_job
from tests.conftest import REPO


def pinned_range() -> SpecifierSet:
    text = (REPO / "pyproject.toml").read_text()
    line = next(line for line in text.splitlines() if line.strip().startswith('"submitit'))
    return Requirement(line.strip().strip(",").split("#")[0].strip().strip(",").strip('"')).specifier


def test_the_installed_submitit_is_in_the_pinned_range():
    assert version("submitit") in pinned_range()


def test_the_sbatch_renderer_takes_every_parameter_we_pass(tmp_path):
    params = slurm_parameters(
        ClusterConfig(partition="mig", account="lab", qos="normal"),
        "videns-run",
        dependency="afterany:12",
        guard=tmp_path,
    )
    accepted = inspect.signature(_make_sbatch_string).parameters
    assert set(params) | {"command", "folder", "map_count"} <= set(accepted)
    script = sbatch_script("python -m task", tmp_path / "%j", 4, params)
    for line in (
        "#SBATCH --gres=gpu:1g.10gb:1",
        "#SBATCH --partition=mig",
        "#SBATCH --array=0-3%4",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --requeue",
        "#SBATCH --dependency=afterany:12",
    ):
        assert line in script


def record_sigterm(flag: str) -> str:
    """A local task that waits, and writes ``flag`` when SIGTERM reaches it."""
    import signal
    import sys

    def on_term(signum, frame):
        Path(flag).write_text("TERM")
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    Path(flag + ".ready").write_text("")
    time.sleep(120)
    return "not stopped"


def test_terminate_local_job_delivers_sigterm_to_the_task(tmp_path):
    executor = submitit.LocalExecutor(folder=tmp_path / "logs")
    executor.update_parameters(timeout_min=5)
    flag = str(tmp_path / "flag")
    job = executor.submit(record_sigterm, flag)
    deadline = time.monotonic() + 60
    while not Path(flag + ".ready").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert terminate_local_job(job)
    while not job.done() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Path(flag).read_text() == "TERM"
    assert not terminate_local_job(job)  # it has ended: nothing to signal
