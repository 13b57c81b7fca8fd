"""The local SLURM (slurm/local/start.sh) behaves as videns relies on.

Plain sbatch scripts, no videns: arrays with one fake MIG slice per element,
afterany dependencies, and real preemption of a ``mig`` job by an ``urgent``
one in both preemption modes. The preempted job runs its work under ``srun``
with ``--signal=USR2@90``, as submitit's jobs do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.slurm_cluster import (
    ClusterInfo,
    array_states,
    cancel_all,
    ensure_cluster,
    job_field,
    job_state,
    release_now,
    restart_count,
    sbatch,
    submit_urgent_blocker,
    wait_for_requeue,
    wait_until_gone_or_done,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SLICE = "gpu:1g.10gb:1"

# The job's payload. $2 says what it does on a signal: "bypass" only logs it
# (submitit's SIGTERM handling), "exit-on-term" exits on SIGTERM, and
# "requeue-on-usr2" runs `scontrol requeue` and exits on USR2 (submitit's
# preemption handling). A second run (after a requeue) logs and succeeds.
WORKER_SH = r"""#!/bin/bash
log=$1 on_signal=$2
run=${SLURM_RESTART_COUNT:-0}
# The time comes from a bash builtin: SLURM signals every process of the step, and a
# `date` child killed by the same SIGTERM would leave "t=" empty.
note() { local t=$EPOCHREALTIME; echo "$1 run=$run t=${t/,/.}" >> "$log"; }
note "start restart_count=${SLURM_RESTART_COUNT:-unset}"
if [ "$run" -ge 1 ]; then note done; exit 0; fi
on_term() {
    note TERM
    if [ "$on_signal" = exit-on-term ]; then exit 143; fi
}
on_usr2() {
    note USR2
    if [ "$on_signal" = requeue-on-usr2 ]; then
        scontrol requeue "$SLURM_JOB_ID"
        note "requeue_rc=$?"
        exit 255
    fi
}
trap on_term TERM
trap on_usr2 USR2
note ready
while true; do sleep 0.2 & wait $!; done
"""


@dataclass(frozen=True)
class Outcome:
    """What happened to one preempted job."""

    job_id: str
    state: str  # final JobState
    restarts: int
    log: list[tuple[str, int, float]]  # (event, run, time) in order, e.g. ("TERM", 0, 1.7e9)

    def events(self, run: int) -> list[str]:
        return [event for event, r, _ in self.log if r == run]

    def time_of(self, event: str) -> float:
        return next(t for e, _, t in self.log if e == event)


def _read_log(path: Path) -> list[tuple[str, int, float]]:
    entries = []
    for line in path.read_text().splitlines():
        fields = line.split()
        run = next(int(f[4:]) for f in fields if f.startswith("run="))
        t = next(float(f[2:]) for f in fields if f.startswith("t="))
        entries.append((" ".join(f for f in fields if not f.startswith(("run=", "t="))), run, t))
    return entries


def _submit_worker(folder: Path, name: str, on_signal: str, requeue: bool) -> tuple[str, Path]:
    worker = folder / "worker.sh"
    worker.write_text(WORKER_SH)
    log = folder / f"{name}.log"
    batch = folder / f"{name}.sbatch"
    batch.write_text(f"#!/bin/bash\nsrun --unbuffered bash {worker} {log} {on_signal}\n")
    args = [
        "--partition=mig",
        f"--gres={SLICE}",
        "--cpus-per-task=1",
        "--signal=USR2@90",
        f"--output={folder}/{name}.out",
        f"--job-name={name}",
    ]
    if requeue:
        args.append("--requeue")
    return sbatch(*args, script=batch), log


def _wait_for_line(log: Path, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not (log.exists() and text in log.read_text()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no '{text}' in {log} after {timeout_s} s")
        time.sleep(0.2)


def _outcome(job_id: str, log: Path) -> Outcome:
    state = wait_until_gone_or_done(job_id, timeout_s=90)[job_id]
    return Outcome(job_id, state, restart_count(job_id), _read_log(log))


@pytest.fixture(scope="module")
def cluster() -> ClusterInfo:
    return ensure_cluster(user_signal=False)


@pytest.fixture
def idle_cluster(cluster: ClusterInfo) -> ClusterInfo:
    cancel_all()
    return cluster


def test_array_elements_run_at_once_each_on_its_own_slice(idle_cluster: ClusterInfo, tmp_path: Path) -> None:
    script = tmp_path / "element.sbatch"
    script.write_text(
        "#!/bin/bash\n"
        f'echo "${{CUDA_VISIBLE_DEVICES:-unset}} $(date +%s.%N)" > {tmp_path}/start_$SLURM_ARRAY_TASK_ID\n'
        "sleep 2\n"
        f"date +%s.%N > {tmp_path}/end_$SLURM_ARRAY_TASK_ID\n"
    )
    array = sbatch(
        "--array=0-3", f"--gres={SLICE}", "--cpus-per-task=1", f"--output={tmp_path}/%A_%a.out", script=script
    )

    states = wait_until_gone_or_done(array, timeout_s=60)

    assert states == {f"{array}_{i}": "COMPLETED" for i in range(4)}
    starts = [(tmp_path / f"start_{i}").read_text().split() for i in range(4)]
    ends = [float((tmp_path / f"end_{i}").read_text()) for i in range(4)]
    devices = [device for device, _ in starts]
    assert "unset" not in devices
    assert len(set(devices)) == 4, f"elements shared a slice: {devices}"
    # 4 one-CPU elements on 2 real cores run side by side: the node advertises more CPUs.
    assert max(float(t) for _, t in starts) < min(ends)


def test_afterany_job_runs_after_every_element_ended(idle_cluster: ClusterInfo, tmp_path: Path) -> None:
    element = tmp_path / "element.sbatch"
    element.write_text(
        "#!/bin/bash\n"
        "sleep $((1 + SLURM_ARRAY_TASK_ID))\n"
        f"date +%s.%N > {tmp_path}/end_$SLURM_ARRAY_TASK_ID\n"
        "exit $((3 * SLURM_ARRAY_TASK_ID))\n"  # element 1 fails: afterany must still run
    )
    after = tmp_path / "after.sbatch"
    after.write_text(f"#!/bin/bash\ndate +%s.%N > {tmp_path}/after_start\n")
    array = sbatch("--array=0-1", "--cpus-per-task=1", f"--output={tmp_path}/%A_%a.out", script=element)
    dependent = sbatch(f"--dependency=afterany:{array}", f"--output={tmp_path}/after.out", script=after)

    assert job_field(dependent, "Reason") == "Dependency"
    assert wait_until_gone_or_done(dependent, timeout_s=60)[dependent] == "COMPLETED"
    assert array_states(array) == {f"{array}_0": "COMPLETED", f"{array}_1": "FAILED"}
    started = float((tmp_path / "after_start").read_text())
    assert all(started >= float((tmp_path / f"end_{i}").read_text()) for i in range(2))


@dataclass(frozen=True)
class SigtermPreemption:
    jobs: dict[str, Outcome]
    dependent_state: str  # of an afterany job on jobs["outlives_grace"]
    dependent_started: float


@pytest.fixture(scope="module")
def sigterm_preemption(tmp_path_factory: pytest.TempPathFactory) -> SigtermPreemption:
    """Preempt three mig jobs at once without preempt_send_user_signal."""
    ensure_cluster(user_signal=False)
    cancel_all()
    folder = tmp_path_factory.mktemp("preempt-sigterm")
    submitted = {
        "outlives_grace": _submit_worker(folder, "outlives_grace", "bypass", requeue=True),
        "exits_on_term": _submit_worker(folder, "exits_on_term", "exit-on-term", requeue=True),
        "no_requeue_flag": _submit_worker(folder, "no_requeue_flag", "bypass", requeue=False),
    }
    after = folder / "after.sbatch"
    after.write_text(f"#!/bin/bash\ndate +%s.%N > {folder}/after_start\n")
    outlives_grace_id = submitted["outlives_grace"][0]
    dependent = sbatch(f"--dependency=afterany:{outlives_grace_id}", f"--output={folder}/after.out", script=after)
    for _, log in submitted.values():
        _wait_for_line(log, "ready", timeout_s=30)

    preempted_at = time.monotonic()
    blocker = submit_urgent_blocker(seconds=3)
    job, log = submitted["outlives_grace"]
    wait_for_requeue(job, timeout_s=120)
    print(f"sigterm mode: preemption to requeue took {time.monotonic() - preempted_at:.0f} s")
    release_now(job)
    outcomes = {name: _outcome(job, log) for name, (job, log) in submitted.items()}
    print(f"sigterm mode: preemption to finished second run took {time.monotonic() - preempted_at:.0f} s")
    assert job_state(blocker) == "COMPLETED"
    dependent_state = wait_until_gone_or_done(dependent, timeout_s=60)[dependent]
    return SigtermPreemption(outcomes, dependent_state, float((folder / "after_start").read_text()))


def test_sigterm_mode_requeues_a_job_that_outlives_grace(sigterm_preemption: SigtermPreemption) -> None:
    job = sigterm_preemption.jobs["outlives_grace"]
    assert "TERM" in job.events(run=0)
    assert "USR2" not in job.events(run=0)
    assert job.restarts >= 1
    assert job.events(run=job.restarts)[0] == f"start restart_count={job.restarts}"
    assert job.state == "COMPLETED"


def test_sigterm_mode_does_not_requeue_a_job_that_exits_during_grace(
    sigterm_preemption: SigtermPreemption,
) -> None:
    # A job that ends on its own after SIGTERM is over for SLURM, even with
    # --requeue: it must requeue itself (scontrol requeue) or outlive the grace.
    job = sigterm_preemption.jobs["exits_on_term"]
    assert "TERM" in job.events(run=0)
    assert job.restarts == 0
    assert job.state in {"COMPLETED", "FAILED"}


def test_preempted_job_submitted_without_requeue_is_not_requeued(
    sigterm_preemption: SigtermPreemption,
) -> None:
    job = sigterm_preemption.jobs["no_requeue_flag"]
    assert job.restarts == 0
    assert job.state == "PREEMPTED"


def test_afterany_job_waits_through_a_requeue(sigterm_preemption: SigtermPreemption) -> None:
    job = sigterm_preemption.jobs["outlives_grace"]
    assert sigterm_preemption.dependent_state == "COMPLETED"
    assert sigterm_preemption.dependent_started >= job.time_of("done")


@pytest.fixture(scope="module")
def user_signal_preemption(tmp_path_factory: pytest.TempPathFactory):
    """Preempt a submitit-like job with preempt_send_user_signal on."""
    ensure_cluster(user_signal=True)
    cancel_all()
    folder = tmp_path_factory.mktemp("preempt-user-signal")
    job, log = _submit_worker(folder, "submitit_like", "requeue-on-usr2", requeue=True)
    _wait_for_line(log, "ready", timeout_s=30)

    preempted_at = time.monotonic()
    submit_urgent_blocker(seconds=3)
    wait_for_requeue(job, timeout_s=60)
    print(f"user-signal mode: preemption to requeue took {time.monotonic() - preempted_at:.0f} s")
    release_now(job)
    yield _outcome(job, log)
    cancel_all()
    ensure_cluster(user_signal=False)  # leave the default mode behind


def test_user_signal_mode_sends_the_jobs_signal_on_preemption(user_signal_preemption: Outcome) -> None:
    signals = [e for e in user_signal_preemption.events(run=0) if e in {"TERM", "USR2"}]
    # The job's own --signal comes instead of SIGTERM (which only comes at the
    # end of the grace time, and this job is gone by then).
    assert signals == ["USR2"]


def test_user_signal_mode_job_requeues_itself_and_resumes(user_signal_preemption: Outcome) -> None:
    job = user_signal_preemption
    assert "requeue_rc=0" in job.events(run=0)
    assert job.restarts >= 1
    assert job.events(run=job.restarts)[0] == f"start restart_count={job.restarts}"
    assert job.state == "COMPLETED"
