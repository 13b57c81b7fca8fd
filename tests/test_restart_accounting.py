"""What restarts cost: the cause, the steps replayed and the time queued, with real signals and kills.

The SLURM side (a real preemption, a time-limit requeue, a SIGKILL between saves)
is in tests/test_launch_slurm.py; here the same records from plain processes.
"""

import json
import os
import signal
import time
from pathlib import Path

import pytest

from slurm.status import format_rows, member_row
from tests.conftest import run_module, start_module, tiny_member_args
from videns.ensemble.resources import merge_resource_logs
from videns.folders import MemberFolder, RunFolder
from videns.member.ledger import read_mark, read_restarts, restart_record, stop_cause
from videns.training.state import TrainingState

EVERY_STEPS = 12
STEPS_PER_EPOCH = 18


def member_args(root: Path, out: Path) -> list[str]:
    # 18 batches of 8 per epoch, 3 epochs: 54 steps; a save every EVERY_STEPS steps and at each epoch end.
    # Saves are written inline: with the background commit a kill may also cost a save that had not
    # reached the disk, and the steps replayed would have no bound the test can know.
    return tiny_member_args(
        root,
        out,
        "--trainer.batch_size",
        "8",
        "--trainer.max_epochs",
        "3",
        "--checkpoint.every_steps",
        str(EVERY_STEPS),
        "--checkpoint.every_minutes",
        "0",
        "--checkpoint.background",
        "false",
    )


def wait_for(predicate, timeout_s: float = 120.0, poll_s: float = 0.01):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise TimeoutError("condition not met")


def saved_at_least(folder: MemberFolder, step: int):
    progress = folder.progress()
    return progress if progress.get("status") == "running" and progress.get("global_step", 0) >= step else None


def all_threads_stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` has stopped (SIGSTOP): none of them can write anything more."""
    states = [stat.read_text().rpartition(")")[2].split()[0] for stat in Path(f"/proc/{pid}/task").glob("*/stat")]
    return bool(states) and all(state in "Tt" for state in states)


def freeze_between_saves(proc, folder: MemberFolder) -> tuple[dict, tuple[int, float]]:
    """SIGSTOP the member at a moment 3 or more steps past its last save and before its next one.

    The member is frozen first and looked at after, so what is read is what a kill finds,
    however fast it trains: a moment that does not qualify (too close to the save, or at a
    step that saves) is let go with SIGCONT and another one is taken. Returns progress.json
    and the step mark as the kill finds them.
    """

    def qualifies(progress: dict, reached: int) -> bool:
        saved = progress.get("global_step", 0)
        # The save at `reached` (every EVERY_STEPS steps, and at each epoch's end) may be under way.
        is_saving = reached - saved >= EVERY_STEPS or reached % STEPS_PER_EPOCH == 0
        return progress.get("status") == "running" and saved >= EVERY_STEPS and reached - saved >= 3 and not is_saving

    seen = 0
    while True:
        # the lambda is called only within this iteration, so it sees this iteration's ``seen``
        wait_for(lambda: proc.poll() is not None or (read_mark(folder.reached_step) or (0, 0))[0] > seen, poll_s=0.001)  # noqa: B023
        assert proc.poll() is None, "the member ended without a moment between saves"
        os.kill(proc.pid, signal.SIGSTOP)
        wait_for(lambda: all_threads_stopped(proc.pid), poll_s=0.001)
        progress, mark = folder.progress(), read_mark(folder.reached_step)
        if qualifies(progress, mark[0]):
            return progress, mark
        seen = mark[0]
        os.kill(proc.pid, signal.SIGCONT)


@pytest.mark.slow
def test_a_sigkill_between_saves_is_counted_as_killed_with_the_steps_it_replays(demo_root, tmp_path):
    folder = MemberFolder(tmp_path / "member")
    proc = start_module("jobs.train", member_args(demo_root, folder.root))
    # A few steps past a periodic save and before the next: what is checked is the record the next start makes.
    killed_progress, (killed_reached, reached_at) = freeze_between_saves(proc, folder)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    killed_at = time.time()
    time.sleep(0.5)  # the time it "waits in the queue"; the bounds below are what was measured, not this figure
    relaunched_at = time.time()
    finished = run_module("jobs.train", member_args(demo_root, folder.root))
    finished_at = time.time()
    assert finished.returncode == 0, finished.stderr
    [record] = read_restarts(folder)
    assert record["cause"] == "killed" and record["signal"] is None
    assert record["resumed_step"] == killed_progress["global_step"]  # the newest save before the kill
    assert record["reached_step"] == killed_reached and 3 <= record["replayed_steps"] < EVERY_STEPS
    assert record["reached_step"] == record["resumed_step"] + record["replayed_steps"]
    # Stopped at its last step (or later, but before the kill), started again after the relaunch, and queued
    # in between: bounds taken from this run's own clock readings, whatever the machine's speed.
    assert reached_at <= record["stopped"] <= killed_at
    assert relaunched_at <= record["started"] <= finished_at
    assert record["queued_s"] == pytest.approx(record["started"] - record["stopped"])
    assert "restart after killed" in finished.stderr


@pytest.mark.slow
def test_a_stop_by_the_user_saves_at_a_step_and_replays_nothing(demo_root, tmp_path):
    folder = MemberFolder(tmp_path / "member")
    proc = start_module("jobs.train", member_args(demo_root, folder.root))
    wait_for(lambda: saved_at_least(folder, 4))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    stopped = folder.progress()
    assert stopped["status"] == "interrupted" and stopped["signal"] == "SIGTERM"
    finished = run_module("jobs.train", member_args(demo_root, folder.root))
    assert finished.returncode == 0, finished.stderr
    [record] = read_restarts(folder)
    assert record["cause"] == "stopped" and record["signal"] == "SIGTERM"
    assert record["replayed_steps"] == 0 and record["resumed_step"] == stopped["global_step"]


def test_usr2_is_the_time_limit_near_the_limit_and_a_preemption_before_it():
    slurm = {"cluster": "slurm", "time_limit_s": 1800.0, "signal_delay_s": 120.0, "run_started": 1000.0}
    assert stop_cause(signal.SIGUSR2, slurm, now=1000.0 + 1800 - 120 + 1) == "time_limit"
    assert stop_cause(signal.SIGUSR2, slurm, now=1000.0 + 300) == "preempted"
    assert stop_cause(signal.SIGUSR2, {"cluster": "local"}, now=5.0) == "time_limit"  # the local executor's timeout
    assert stop_cause(signal.SIGTERM, slurm, now=1100.0) == "signal"


def test_sigterm_then_the_same_job_again_is_a_preemption_and_another_job_a_user_stop():
    stopped = {"status": "interrupted", "stop_cause": "signal", "signal": "SIGTERM", "job_id": "17_3", "updated": 100.0}
    requeued = restart_record(stopped, (40, 99.0), {}, 40, {"job_id": "17_3"}, now=160.0)
    relaunched = restart_record(stopped, (40, 99.0), {}, 40, {"job_id": "18_0"}, now=160.0)
    assert (requeued["cause"], requeued["queued_s"], requeued["replayed_steps"]) == ("preempted", 60.0, 0)
    assert relaunched["cause"] == "stopped"


def test_resources_and_status_show_slice_hours_restarts_by_cause_and_lost_steps(tmp_path):
    run = RunFolder(tmp_path / "run")
    member = run.member(7)
    member.root.mkdir(parents=True)
    alloc = {"gres": {"gpu:1g.10gb": 1}, "job_id": "5_0"}
    lines = [
        {"event": "start", "time": 0.0, **alloc},
        {"time": 1800.0, **alloc},
        {"event": "stop", "time": 3600.0, **alloc},
        {"event": "start", "time": 4000.0, **alloc},
        {"event": "stop", "time": 5800.0, **alloc},
    ]
    member.resources.write_text("".join(json.dumps(line) + "\n" for line in lines))
    records = [
        {"cause": "preempted", "replayed_steps": 0, "queued_s": 400.0},
        {"cause": "killed", "replayed_steps": 9, "queued_s": 30.0},
    ]
    member.restarts.write_text("".join(json.dumps(r) + "\n" for r in records))
    merged = merge_resource_logs({"seed_7": member.resources}, restarts={"seed_7": read_restarts(member)})
    summary, totals = merged["members"]["seed_7"], merged["totals"]
    assert summary["slice_hours"] == {"gpu:1g.10gb": 1.5}  # 3600 s + 1800 s of one slice, no GPU ever visible
    assert totals["slice_hours"] == {"gpu:1g.10gb": 1.5}
    assert {cause: n for cause, n in totals["restarts_by_cause"].items() if n} == {"preempted": 1, "killed": 1}
    assert totals["replayed_steps"] == 9 and totals["queued_seconds"] == 430.0
    assert summary["restarts"] == totals["restarts"] == 2  # the lines carry no restart count: the records do
    row = member_row(run, 7, "5_0", None, launcher_alive=False)
    table = format_rows([row])
    assert "lost steps" in table.splitlines()[0]
    assert "2 (preempted 1, killed 1)" in table and row.lost_steps == 9


def test_a_member_yet_to_end_its_first_epoch_shows_no_best_accuracy(tmp_path):
    run = RunFolder(tmp_path / "run")
    member = run.member(3)
    member.root.mkdir(parents=True)
    fresh = TrainingState(seed=3, config_hash="x")  # what the loop records before its first validation
    progress = {"epoch": 0, "max_epochs": 2, "best_val_accuracy": fresh.best_val_accuracy}
    progress["best_epoch"] = fresh.best_epoch
    member.progress_file.write_text(json.dumps(progress))
    row = member_row(run, 3, "5_0", None, launcher_alive=False)
    assert row.best_val_accuracy is None and row.best_epoch is None
    assert "-1" not in format_rows([row]).splitlines()[1]
