"""jobs.launch on the real single-node SLURM of slurm/local/start.sh.

- an array of two demo members and the afterany ensemble job finish;
- real preemption by an ``urgent`` job, with and without preempt_send_user_signal:
  the member saves at a step boundary, is requeued (restart count recorded in its
  folder), resumes from that checkpoint and ends bit-identical to an unpreempted
  member; the ensemble job waits for it and then writes its report;
- a task that reaches its time limit is requeued by submitit and finishes.

The SLURM state is shared with whatever else runs on the cluster, so the tests
cancel only their own jobs, and the preemption mode can change under them if
another test run switches it at the same moment.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import pytest

from tests.support.member_files import assert_members_identical
from tests.support.slurm_cluster import (
    GONE,
    TERMINAL_STATES,
    ensure_cluster,
    job_record,
    job_state,
    release_now,
    restart_count,
    submit_urgent_blocker,
    wait_for_requeue,
)
from videns.member.ledger import read_mark

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
BASE_SEED = 7


def member_args(demo_root: Path, max_epochs: int) -> list[str]:
    """A tiny member, ~0.5 s per epoch on one core; checkpoints every 4 steps."""
    return [
        "--config",
        str(REPO / "configs" / "demo.yaml"),
        "--data.root",
        str(demo_root),
        "--data.generate_demo",
        "false",
        "--seed",
        str(BASE_SEED),
        "--model.init_args.hidden_dim",
        "16",
        "--model.init_args.num_attention_heads",
        "2",
        "--model.init_args.head_dims",
        "[16]",
        "--trainer.batch_size",
        "16",
        "--trainer.max_epochs",
        str(max_epochs),
        "--trainer.patience",
        "0",
        "--trainer.progress",
        "off",
        "--checkpoint.every_steps",
        "4",
        "--checkpoint.every_minutes",
        "0",
    ]


# Long enough that the urgent job preempts the member before it ends: 10 epochs (~3 s on an idle
# machine) once finished before SLURM had scheduled the urgent job.
PREEMPTED_EPOCHS = 40


def env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def launch(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.launch", "--cluster", "slurm", "--site", "local", *args],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def reference(tmp_path_factory, demo_root):
    """The unpreempted member (seed BASE_SEED, one thread like a one-CPU task), trained while SLURM works."""
    out_dir = tmp_path_factory.mktemp("reference") / "member"
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.train", *member_args(demo_root, PREEMPTED_EPOCHS), "--out_dir", str(out_dir)],
        cwd=REPO,
        env={**env(), "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def finished() -> Path:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        return out_dir

    yield finished
    if proc.poll() is None:
        proc.kill()


class Run:
    """A launched run folder and its SLURM jobs."""

    def __init__(self, root: Path):
        self.root = root
        self.launch = json.loads((root / "launch.json").read_text())
        self.member_jobs = {int(s): j for s, j in self.launch["member_job_ids"].items()}
        self.ensemble_job = self.launch["ensemble_job_id"]

    def member(self, seed: int) -> Path:
        return self.root / "members" / f"seed_{seed}"

    def progress(self, seed: int) -> dict:
        return json.loads((self.member(seed) / "progress.json").read_text())

    def jobs(self) -> list[str]:
        return [*self.member_jobs.values(), self.ensemble_job]

    def cancel(self) -> None:
        active = [j for j in self.jobs() if job_state(j) not in TERMINAL_STATES | {GONE}]
        if active:
            subprocess.run(["scancel", *active], check=False)


@pytest.fixture
def runs():
    """Launched runs; their jobs are cancelled if a test leaves them behind."""
    launched: list[Run] = []
    yield launched
    for run in launched:
        run.cancel()


def wait_for_training(run: Run, seed: int, min_step: int, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            progress = run.progress(seed)
            if progress["status"] == "running" and progress["global_step"] >= min_step:
                return progress
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"seed {seed}: no step {min_step} within {timeout_s} s; jobs {run.jobs()}")


def drive_to_end(run: Run, timeout_s: float, on_requeued=None) -> None:
    """Release requeued elements at once (no ~120 s BeginTime) until the ensemble job has ended."""
    deadline = time.monotonic() + timeout_s
    while job_state(run.ensemble_job) not in TERMINAL_STATES | {GONE}:
        for job in run.member_jobs.values():
            record = job_record(job)
            if record and record["JobState"] == "PENDING" and record.get("Reason") == "BeginTime":
                if on_requeued:
                    on_requeued(job)
                release_now(job)
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"run {run.root} not done in {timeout_s} s: " + "; ".join(f"{j}={job_state(j)}" for j in run.jobs())
            )
        time.sleep(0.5)


# ---------------------------------------------------------------- no preemption


def test_demo_array_of_two_and_the_ensemble_job_finish(tmp_path, runs):
    ensure_cluster(user_signal=False)
    run_dir = tmp_path / "run"
    data = tmp_path / "demo-data"  # empty: the launcher writes the demo data before submitting
    started = time.monotonic()
    proc = launch(
        "--array",
        "2",
        "--config",
        str(REPO / "configs" / "demo.yaml"),
        "--data.root",
        str(data),
        "--data.generate_demo",
        "true",
        "--trainer.max_epochs",
        "3",
        "--run_dir",
        str(run_dir),
        "--wait",
        timeout_s=400,
    )
    run = Run(run_dir)
    runs.append(run)
    assert run.launch["cluster"] == "slurm" and run.launch["seeds"] == [42, 43]
    assert [run.member_jobs[42], run.member_jobs[43]] == [f"{run.launch['array_job_id']}_{i}" for i in (0, 1)]
    for seed, job in run.member_jobs.items():
        assert job_state(job) == "COMPLETED"
        assert json.loads((run.member(seed) / "result.json").read_text())["status"] == "finished"
        context = json.loads((run.member(seed) / "resources.jsonl").read_text().splitlines()[0])
        assert context["job_id"] == job and context["cluster"] == "slurm"
    assert job_state(run.ensemble_job) == "COMPLETED"
    report = json.loads((run_dir / "ensemble" / "report.json").read_text())
    assert [m["seed"] for m in report["members"]] == [42, 43] and report["skipped"] == []
    with h5py.File(data / "test_features_multiscale.h5", "r") as f:
        assert report["num_items"] == len(f["labels"]) and 0.0 <= report["ensemble"]["accuracy"] <= 1.0
    assert "ensemble (2)" in proc.stdout and "ensemble: done" in proc.stdout
    print(f"demo array of 2 + ensemble on SLURM: {time.monotonic() - started:.0f} s")

    # Grow the finished run to three members: only seed 44 takes a queue slot.
    checkpoints = {p: p.stat().st_mtime_ns for p in run_dir.glob("members/*/checkpoints/*/*")}
    proc = launch("--run_dir", str(run_dir), "--array", "3", "--wait", timeout_s=400)
    grown = Run(run_dir)
    runs.append(grown)
    assert grown.launch["seeds"] == [42, 43, 44] and grown.launch["trained"] == [44]
    assert grown.member_jobs[44] == grown.launch["array_job_id"]  # one task: submitit submits a plain job
    assert {s: grown.member_jobs[s] for s in (42, 43)} == run.member_jobs  # their jobs of the first launch
    assert job_state(grown.member_jobs[44]) == "COMPLETED" and job_state(grown.ensemble_job) == "COMPLETED"
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == checkpoints
    report = json.loads((run_dir / "ensemble" / "report.json").read_text())
    assert [m["seed"] for m in report["members"]] == [42, 43, 44]

    # Apply the grown ensemble to the test file in a SLURM job: the CSV matches the ensemble job's own.
    out = tmp_path / "predicted.csv"
    predicted = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.predict",
            "--run_dir",
            str(run_dir),
            "--input",
            str(data / "test_features_multiscale.h5"),
            "--out",
            str(out),
            "--submit",
            "--wait",
            "--site",
            "local",
        ],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert predicted.returncode == 0, predicted.stdout + predicted.stderr
    assert "videns-predict job" in predicted.stdout and f"-> {out}" in predicted.stdout
    with out.open() as f:
        rows = list(csv.DictReader(f))
    with (run_dir / "ensemble" / "predictions.csv").open() as f:
        expected = list(csv.DictReader(f))
    assert len(rows) == report["num_items"] == len(expected)
    assert [r["predicted_class"] for r in rows] == [r["predicted_class"] for r in expected]


# ---------------------------------------------------------------- preemption, both modes


@dataclass
class Preempted:
    run: Run
    seed: int
    stop_progress: dict  # progress.json just before the urgent job came
    ensemble_while_requeued: dict  # the ensemble job's record while the member waited in the queue
    status_while_requeued: str  # jobs.status's table at that moment
    seconds: float


def preempt_a_member(tmp_path: Path, demo_root: Path, runs: list, user_signal: bool) -> Preempted:
    ensure_cluster(user_signal=user_signal)
    run_dir = tmp_path / "run"
    started = time.monotonic()
    launch("--array", "2", *member_args(demo_root, PREEMPTED_EPOCHS), "--run_dir", str(run_dir))
    run = Run(run_dir)
    runs.append(run)
    stop_progress = wait_for_training(run, BASE_SEED, min_step=4)
    submit_urgent_blocker(seconds=3)  # needs every CPU: both members are preempted
    wait_for_requeue(run.member_jobs[BASE_SEED], timeout_s=120)
    seen = {}

    def on_requeued(job: str) -> None:
        if job == run.member_jobs[BASE_SEED] and job not in seen:
            seen[job] = job_record(run.ensemble_job), status_table(run_dir)

    drive_to_end(run, timeout_s=300, on_requeued=on_requeued)
    ensemble, table = seen[run.member_jobs[BASE_SEED]]
    return Preempted(run, BASE_SEED, stop_progress, ensemble, table, time.monotonic() - started)


def status_table(run_dir: Path) -> str:
    return subprocess.run(
        [sys.executable, "-m", "jobs.status", "--run_dir", str(run_dir)],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout


def assert_resumed_where_it_stopped(member: Path, signal_name: str) -> tuple[int, int]:
    log = (member / "train.log").read_text().splitlines()
    got_signal = [line for line in log if f"received {signal_name}" in line]
    stopped = [line for line in log if "stopped at epoch" in line]
    resumed = [line for line in log if "resuming seed" in line]
    assert got_signal and stopped and resumed, "\n".join(log[-30:])
    # "stopped at epoch E batch B/N" then "resuming ... from step-S: epoch E, batch B (restart 1)"
    epoch, batch = stopped[0].split("stopped at epoch ")[1].split(";")[0].split(" batch ")
    batch = batch.split("/")[0]
    assert f"epoch {epoch}, batch {batch} (restart 1)" in resumed[0]
    assert (int(epoch), int(batch)) != (1, 0), "resumed from the start, not from the checkpoint"
    return int(epoch), int(batch)


def assert_preemption_properties(outcome: Preempted, reference_dir: Path, signal_name: str) -> None:
    run, member = outcome.run, outcome.run.member(outcome.seed)
    job = run.member_jobs[outcome.seed]
    # Requeued, and the member folder knows it.
    assert restart_count(job) >= 1 and job_state(job) == "COMPLETED"
    progress = run.progress(outcome.seed)
    assert progress["status"] == "finished" and progress["restarts"] >= 1
    contexts = [json.loads(line) for line in (member / "resources.jsonl").read_text().splitlines()]
    assert {c["restart_count"] for c in contexts} >= {0, 1}
    # Resumed from the checkpoint it saved on the signal, not from epoch 0.
    assert_resumed_where_it_stopped(member, signal_name)
    # Same weights, optimizer state, best model and history as a member never preempted.
    assert_members_identical(member, reference_dir)
    # The dependent job waited for the requeued element, then wrote the report.
    assert outcome.ensemble_while_requeued["JobState"] == "PENDING"
    assert outcome.ensemble_while_requeued["Reason"] == "Dependency"
    table = outcome.status_while_requeued.splitlines()
    row = next(line.split() for line in table if line.startswith(f"{outcome.seed} "))
    assert row[1] == "requeued", outcome.status_while_requeued
    assert "ensemble: pending" in outcome.status_while_requeued
    assert job_state(run.ensemble_job) == "COMPLETED"
    ensemble, element = job_record(run.ensemble_job), job_record(job)
    assert ensemble["StartTime"] >= element["EndTime"]
    report = run.root / "ensemble" / "report.json"
    assert report.stat().st_mtime > (member / "result.json").stat().st_mtime
    # What the preemption cost: counted as one, nothing replayed (it saved at a step), time in the queue.
    [restart] = restarts_of(member)
    assert restart["cause"] == "preempted" and restart["signal"] == signal_name
    assert restart["replayed_steps"] == 0 and restart["job_id"] == restart["previous_job_id"] == job
    assert 1.0 < restart["queued_s"] < 300
    resources = json.loads((run.root / "ensemble" / "resources.json").read_text())
    costs = resources["members"][f"seed_{outcome.seed}"]
    assert costs["restarts_by_cause"]["preempted"] == 1 and costs["replayed_steps"] == 0
    assert resources["totals"]["restarts_by_cause"]["preempted"] >= 1
    assert_slice_hours(costs)
    print(f"preempted ({signal_name}) and finished in {outcome.seconds:.0f} s; queued {restart['queued_s']:.1f} s")


def restarts_of(member: Path) -> list[dict]:
    path = member / "restarts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def assert_slice_hours(costs: dict) -> None:
    """One fake gpu:1g.10gb slice per member (slurm/sites/local.yaml): its hours are the member's run time,
    counted from the allocation although no CUDA device is visible on this CPU node."""
    assert set(costs["slice_hours"]) == {"gpu:1g.10gb"}
    assert abs(costs["slice_hours"]["gpu:1g.10gb"] - costs["wall_seconds"] / 3600) < 1e-9
    assert costs["slice_hours"]["gpu:1g.10gb"] > 0 and costs["gpu_hours"] == 0.0


def test_preemption_with_sigterm_only_requeues_and_resumes_bit_identically(tmp_path, demo_root, runs, reference):
    outcome = preempt_a_member(tmp_path, demo_root, runs, user_signal=False)
    assert_preemption_properties(outcome, reference(), "SIGTERM")
    log = (outcome.run.member(outcome.seed) / "train.log").read_text()
    assert "waiting for SLURM to end this run" in log  # outlived the grace time, so SLURM requeued it


def test_preemption_with_user_signal_requeues_through_submitit(tmp_path, demo_root, runs, reference):
    outcome = preempt_a_member(tmp_path, demo_root, runs, user_signal=True)
    assert_preemption_properties(outcome, reference(), "SIGUSR2")
    log = (outcome.run.member(outcome.seed) / "train.log").read_text()
    assert "handing over to submitit to requeue" in log


# ---------------------------------------------------------------- time limit

TIME_LIMIT_EPOCHS = 60
TIME_LIMIT_REQUEUES = 30


def signal_pending(pid: int, signum: int) -> bool:
    """Whether ``signum`` waits, undelivered, for the stopped process ``pid`` (True once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return True
    masks = [int(line.split()[1], 16) for line in status if line.startswith(("SigPnd:", "ShdPnd:"))]
    return any(mask & (1 << (signum - 1)) for mask in masks)


def hold_until_signalled(run: Run, seed: int, signum: int, timeout_s: float = 90) -> None:
    """SIGSTOP the member once it trains, and SIGCONT it once SLURM's ``signum`` waits for it.

    The time limit goes on counting while the process is stopped, so its signal comes as it
    would, and the member cannot finish first however fast this machine trains: a CI run
    once trained all 160 epochs in 22 s, before the USR2 due 0-30 s after the start.
    """
    pid = wait_for_training(run, seed, min_step=1)["pid"]
    os.kill(pid, signal.SIGSTOP)
    stopped = time.monotonic()
    while not signal_pending(pid, signum) and time.monotonic() < stopped + timeout_s:
        time.sleep(0.2)
    print(f"member held {time.monotonic() - stopped:.0f} s; signal pending: {signal_pending(pid, signum)}")
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


def test_a_task_at_its_time_limit_is_requeued_and_finishes(tmp_path, demo_root, runs):
    """Two minutes per run, USR2 ninety seconds before the end: the member needs more than one run.

    SLURM checks time limits every 30 s, so a run's USR2 comes 0-30 s after it starts. The first
    run is held (SIGSTOP) until its USR2 is pending, so it cannot finish first; later runs train
    TIME_LIMIT_EPOCHS at 0.14-0.45 s per epoch (measured under this SLURM), so a slow machine may
    need several more runs: a CI run under load once needed more than the 8 requeues then allowed,
    and failed for want of requeues rather than for any fault of ours, so the allowance is far above need.
    """
    ensure_cluster(user_signal=False)
    run_dir = tmp_path / "run"
    started = time.monotonic()
    launch(
        "--array",
        "1",
        *member_args(demo_root, max_epochs=TIME_LIMIT_EPOCHS),
        "--run_dir",
        str(run_dir),
        "--slurm.time_min",
        "2",
        "--slurm.signal_delay_s",
        "90",
        "--slurm.max_requeue_on_timeout",
        str(TIME_LIMIT_REQUEUES),
    )
    run = Run(run_dir)
    runs.append(run)
    job = run.member_jobs[BASE_SEED]
    assert "_" not in job  # a one-member "array" is a plain job
    hold_until_signalled(run, BASE_SEED, signal.SIGUSR2)
    again = subprocess.run(
        [sys.executable, "-m", "jobs.launch", "--run_dir", str(run_dir)],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 2 and "still queued or running" in again.stderr, again.stderr
    drive_to_end(run, timeout_s=480)
    assert job_state(job) == "COMPLETED" and restart_count(job) >= 1
    progress = run.progress(BASE_SEED)
    assert progress["status"] == "finished" and progress["epoch"] == TIME_LIMIT_EPOCHS and progress["restarts"] >= 1
    submitit_log = (run_dir / "logs" / job / f"{job}_0_log.err").read_text()
    assert "this job is timed-out" in submitit_log and "Requeued job" in submitit_log
    assert_resumed_where_it_stopped(run.member(BASE_SEED), "SIGUSR2")
    assert (run_dir / "ensemble" / "report.json").exists()
    restarts = restarts_of(run.member(BASE_SEED))
    assert len(restarts) == restart_count(job) and {r["cause"] for r in restarts} == {"time_limit"}
    assert all(r["replayed_steps"] == 0 and r["signal"] == "SIGUSR2" for r in restarts)
    resources = json.loads((run_dir / "ensemble" / "resources.json").read_text())
    assert resources["totals"]["restarts_by_cause"]["time_limit"] == len(restarts)
    assert_slice_hours(resources["members"][f"seed_{BASE_SEED}"])
    print(f"time-limit requeue: {restart_count(job)} restart(s), {time.monotonic() - started:.0f} s")


# ---------------------------------------------------------------- a kill between saves

KILL_EVERY_STEPS = 40


def test_a_sigkill_between_saves_is_counted_with_the_steps_it_replays(tmp_path, demo_root, runs):
    """SIGKILL a member task a few steps after a periodic save; the job fails, a relaunch resumes it."""
    ensure_cluster(user_signal=False)
    run_dir = tmp_path / "run"
    # Inline saves: a background commit cut by the kill would add its own steps to the replay.
    args = [
        *member_args(demo_root, max_epochs=30),
        "--checkpoint.every_steps",
        str(KILL_EVERY_STEPS),
        "--checkpoint.background",
        "false",
    ]
    launch("--array", "1", *args, "--run_dir", str(run_dir))
    run = Run(run_dir)
    runs.append(run)
    saved = wait_for_training(run, BASE_SEED, min_step=KILL_EVERY_STEPS)
    mark = run.member(BASE_SEED) / "reached_step"  # a few steps past the save, well before the next one
    deadline = time.monotonic() + 60
    while (read_mark(mark) or (0, 0))[0] < saved["global_step"] + 3:
        assert time.monotonic() < deadline, "the member made no progress after its save"
        time.sleep(0.001)
    before_kill = run.progress(BASE_SEED)
    os.kill(before_kill["pid"], signal.SIGKILL)
    killed_at = time.time()
    deadline = time.monotonic() + 120  # the failed member's job, then the afterany ensemble job, must end
    while any(job_state(job) not in TERMINAL_STATES | {GONE} for job in run.jobs()):
        assert time.monotonic() < deadline, f"jobs {run.jobs()} did not end after the kill"
        time.sleep(0.5)
    assert before_kill["status"] == "running" and before_kill["global_step"] >= saved["global_step"]
    time.sleep(2.0)
    relaunched_at = time.time()
    launch("--run_dir", str(run_dir), "--wait", timeout_s=400)
    again = Run(run_dir)
    runs.append(again)
    assert again.launch["trained"] == [BASE_SEED] and again.member_jobs[BASE_SEED] != run.member_jobs[BASE_SEED]
    [restart] = restarts_of(run.member(BASE_SEED))
    assert restart["cause"] == "killed" and restart["signal"] is None
    assert restart["resumed_step"] == before_kill["global_step"]
    assert 3 <= restart["replayed_steps"] < KILL_EVERY_STEPS
    assert relaunched_at - killed_at <= restart["queued_s"] < 300
    resources = json.loads((run_dir / "ensemble" / "resources.json").read_text())
    costs = resources["members"][f"seed_{BASE_SEED}"]
    assert costs["restarts_by_cause"]["killed"] == 1 and costs["replayed_steps"] == restart["replayed_steps"]
    cost_section = (run_dir / "ensemble" / "report.md").read_text().split("## Cost of the run")[1]
    cost_row = next(line for line in cost_section.splitlines() if line.startswith(f"| seed {BASE_SEED} |"))
    assert "gpu:1g.10gb:" in cost_row and "1 (killed 1)" in cost_row and f"| {restart['replayed_steps']} |" in cost_row
    table = status_table(run_dir)
    row = next(line for line in table.splitlines() if line.startswith(f"{BASE_SEED} "))
    assert "1 (killed 1)" in row and f" {restart['replayed_steps']} " in row
