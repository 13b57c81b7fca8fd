"""A SLURM controller that does not answer is never read as "nothing is running".

The relaunch refuses in one line and starts nothing here, and jobs.status says
``unknown``: with the real local SLURM's controller stopped while its slurmd
keeps a member training, and on a machine where scontrol is not installed.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from slurm.queue import wait_while_active
from tests.conftest import REPO, run_module, tiny_member_args
from tests.support.slurm_cluster import cancel_all, ensure_cluster
from videns.folders import RunFolder
from videns.member.ledger import read_mark

SEED = 7


def member_options(demo_root: Path, epochs: int) -> list[str]:
    args = tiny_member_args(
        demo_root, Path("unused"), "--trainer.max_epochs", str(epochs), "--data.generate_demo", "false"
    )
    return [
        "--config",
        str(REPO / "configs" / "demo.yaml"),
        *args[args.index("--seed") :],
        "--data.root",
        str(demo_root),
    ]


def starting_lines(run: RunFolder) -> list[str]:
    return [line for line in run.member(SEED).log.read_text().splitlines() if " starting in " in line]


def assert_refused_in_one_line(result: subprocess.CompletedProcess, words: str) -> None:
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and words in result.stderr, result.stderr


@pytest.mark.slow
def test_without_scontrol_a_slurm_run_is_neither_relaunched_nor_called_finished(demo_root, tmp_path):
    """A run launched on SLURM, looked at from a machine with no SLURM clients (PATH without them)."""
    run = RunFolder(tmp_path / "run")
    launched = run_module(
        "jobs.launch", [*member_options(demo_root, 1), "--array", "1", "--cluster", "local", "--run_dir", str(run.root)]
    )
    assert launched.returncode == 0, launched.stdout + launched.stderr
    record = json.loads(run.launch_file.read_text())
    record.update(cluster="slurm", member_job_ids={str(SEED): "4242_0"}, ensemble_job_id="4243")
    run.launch_file.write_text(json.dumps(record))  # as a SLURM launch leaves it
    no_slurm = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    relaunch = subprocess.run(
        [sys.executable, "-m", "jobs.launch", "--run_dir", str(run.root)],
        cwd=REPO,
        env=no_slurm,
        capture_output=True,
        text=True,
    )
    assert_refused_in_one_line(relaunch, "scontrol is not installed here")
    status = subprocess.run(
        [sys.executable, "-m", "jobs.status", "--run_dir", str(run.root)],
        cwd=REPO,
        env=no_slurm,
        capture_output=True,
        text=True,
    )
    assert status.returncode == 3, status.stdout + status.stderr
    row = next(line for line in status.stdout.splitlines() if line.startswith(str(SEED)))
    assert row.split()[1] == "unknown" and "ensemble: unknown" in status.stdout
    assert len(starting_lines(run)) == 1


@pytest.mark.slurm
@pytest.mark.slow
def test_a_silent_controller_refuses_the_relaunch_and_status_says_unknown(demo_root, tmp_path):
    cluster = ensure_cluster(user_signal=False)
    cancel_all()
    run = RunFolder(tmp_path / "run")
    launched = run_module(
        "jobs.launch",
        [
            *member_options(demo_root, 400),
            "--array",
            "1",
            "--cluster",
            "slurm",
            "--site",
            "local",
            "--run_dir",
            str(run.root),
        ],
    )
    assert launched.returncode == 0, launched.stdout + launched.stderr
    job = json.loads(run.launch_file.read_text())["member_job_ids"][str(SEED)]
    wait_for_training(run)
    controller = cluster.state_dir / "run" / "slurmctld.pid"
    os.kill(int(controller.read_text()), signal.SIGTERM)  # slurmd and the job go on, as in a failover
    try:
        wait_until_silent()
        relaunch = run_module("jobs.launch", ["--run_dir", str(run.root)])
        assert_refused_in_one_line(relaunch, "the SLURM controller did not answer")
        status = run_module("jobs.status", ["--run_dir", str(run.root)])
        assert status.returncode == 3, status.stdout + status.stderr
        row = next(line for line in status.stdout.splitlines() if line.startswith(str(SEED)))
        assert row.split()[1] == "unknown" and "did not answer" in status.stderr
        assert read_mark(run.member(SEED).reached_step)[0] > 0
        assert len(starting_lines(run)) == 1, starting_lines(run)  # nothing was started here
        assert "cluster: local" not in run.member(SEED).log.read_text()
        waiter = threading.Thread(target=wait_while_active, args=([job],), kwargs={"poll_s": 1.0}, daemon=True)
        waiter.start()
        waiter.join(timeout=60)  # longer than one query's three silent tries
        assert waiter.is_alive(), "wait_while_active took a silent controller for 'nothing is running'"
    finally:
        ensure_cluster(user_signal=False)  # start.sh starts the controller again
        cancel_all()
    waiter.join(timeout=180)
    assert not waiter.is_alive(), "once the controller answers that the job has ended, the wait ends"


def wait_for_training(run: RunFolder, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        mark = read_mark(run.member(SEED).reached_step)
        if mark and mark[0] >= 3:
            return
        time.sleep(0.2)
    raise AssertionError(f"member {SEED} of {run.root} never started training")


def wait_until_silent(timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
        if " is UP" not in ping.stdout:
            return
        time.sleep(0.5)
    raise AssertionError("slurmctld still answers after SIGTERM")
