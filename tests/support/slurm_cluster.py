"""Helpers for tests that run jobs on the local SLURM of ``slurm/local/start.sh``.

Accounting is off on that cluster, so ``sacct`` does not work. Everything here
reads ``scontrol show job -o`` and ``squeue``; a finished job stays visible to
scontrol for MinJobAge (600 s) and then is :data:`GONE`.

Job ids are strings: ``"12"`` for a plain job or a whole array, ``"12_1"`` for
one array element.

Typical use::

    cluster = ensure_cluster(user_signal=False)   # skips where SLURM can't run
    cancel_all()
    job = sbatch("--requeue", "--signal=USR2@90", script=script_path)
    wait_for_state(job, "RUNNING", timeout_s=30)
    submit_urgent_blocker(seconds=3)               # preempts the mig job
    wait_for_requeue(job, timeout_s=120)
    release_now(job)                               # skip the ~120 s BeginTime
    wait_until_gone_or_done(job, timeout_s=60)
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
START_SH = REPO_ROOT / "slurm" / "local" / "start.sh"
DEFAULT_STATE_DIR = Path("/tmp/videns-slurm")
EXIT_UNAVAILABLE = 3  # start.sh's status for "SLURM cannot run on this machine"
RELEASE_DELAY_S = 2.0  # see release_now

GONE = "GONE"  # job_state() of a job scontrol no longer knows (purged or never existed)
TERMINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
    }
)

# A field starts at a space followed by Key= (keys may hold / and :, as in
# "CPUs/Task" or "ReqB:S:C:T"); values may hold "=" (TRES=cpu=1,mem=3G).
_FIELD_RE = re.compile(r"([A-Za-z][\w/:]*)=(.*?)(?= [A-Za-z][\w/:]*=|$)")


@dataclass(frozen=True)
class ClusterInfo:
    """What ``ensure_cluster`` found running."""

    node: str  # the single node's name (``hostname -s``)
    partitions: tuple[str, ...]  # e.g. ("mig", "urgent")
    default_partition: str  # "mig"
    state_dir: Path  # VIDENS_SLURM_DIR: config, logs, spool
    conf: Path  # slurm.conf; also put in os.environ["SLURM_CONF"]
    cpus: int  # CPUs the node advertises (more than the real cores)
    gres: str  # the node's GRES, e.g. "gpu:1g.10gb:4"
    user_signal: bool  # preemption sends the job's --signal instead of SIGTERM


def _state_dir() -> Path:
    return Path(os.environ.get("VIDENS_SLURM_DIR", str(DEFAULT_STATE_DIR)))


def _run(*cmd: str, check: bool = True, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a SLURM client with SLURM_CONF pointing at the local cluster."""
    env = dict(os.environ)
    env.setdefault("SLURM_CONF", str(_state_dir() / "etc" / "slurm.conf"))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def ensure_cluster(user_signal: bool = False, timeout_s: float = 600) -> ClusterInfo:
    """Start the local cluster (or switch its preemption mode) and describe it.

    Runs ``start.sh`` (with ``--user-signal`` when asked), which is quick when
    the cluster already runs in that mode. Calls ``pytest.skip`` only where
    SLURM cannot run here at all (not root, packages not installable); any
    other failure fails the test with start.sh's message.
    """
    if os.name != "posix" or not Path("/proc").is_dir():
        pytest.skip("the local SLURM needs Linux")
    if os.geteuid() != 0:
        pytest.skip("the local SLURM needs root (start.sh installs packages and runs slurmd as root)")
    cmd = ["bash", str(START_SH)] + (["--user-signal"] if user_signal else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    last_line = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
    if proc.returncode == EXIT_UNAVAILABLE:
        pytest.skip(last_line)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}: {last_line}\n{proc.stdout}", pytrace=False)

    state_dir = _state_dir().resolve()
    conf = state_dir / "etc" / "slurm.conf"
    # sbatch/squeue run by submitit or by the code under test inherit this.
    os.environ["SLURM_CONF"] = str(conf)
    part_lines = _run("sinfo", "-h", "-o", "%P").stdout.split()
    partitions = tuple(p.rstrip("*") for p in part_lines)
    default = next((p.rstrip("*") for p in part_lines if p.endswith("*")), partitions[0])
    node = _run("sinfo", "-h", "-N", "-o", "%N").stdout.split()[0]
    node_rec = _parse_record(_run("scontrol", "show", "node", "-o", node).stdout.strip())
    return ClusterInfo(
        node=node,
        partitions=partitions,
        default_partition=default,
        state_dir=state_dir,
        conf=conf,
        cpus=int(node_rec["CPUTot"]),
        gres=node_rec.get("Gres", ""),
        user_signal=user_signal,
    )


def _parse_record(line: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in _FIELD_RE.finditer(line)}


def job_records(job_id: str) -> list[dict[str, str]]:
    """All ``scontrol show job -o`` records for an id: one for a job or array
    element, one per element (plus one for still-unsplit pending elements) for a
    whole array. Empty once scontrol no longer knows the id."""
    proc = _run("scontrol", "show", "job", "-o", str(job_id), check=False)
    if proc.returncode != 0:
        if "Invalid job id" in proc.stderr:
            return []
        raise RuntimeError(f"scontrol show job {job_id}: {proc.stderr.strip()}")
    return [_parse_record(line) for line in proc.stdout.splitlines() if line.strip()]


def _element_id(rec: dict[str, str]) -> str:
    task = rec.get("ArrayTaskId")
    return f"{rec['ArrayJobId']}_{task}" if task else rec["JobId"]


def array_states(job_id: str) -> dict[str, str]:
    """Element id (``"12_0"``, or ``"12_[2-3]"`` for unsplit pending ones) to
    JobState; ``{job_id: state}`` for a plain job; empty once gone."""
    return {_element_id(rec): rec["JobState"] for rec in job_records(job_id)}


def job_record(job_id: str) -> dict[str, str] | None:
    """The one record of a job or array element; None once gone."""
    records = job_records(job_id)
    if len(records) > 1:
        raise ValueError(f"{job_id} names {len(records)} array elements; use array_states() or '<id>_<i>'")
    return records[0] if records else None


def job_state(job_id: str) -> str:
    """JobState of a job or array element (``"12_1"``), or :data:`GONE`."""
    rec = job_record(job_id)
    return rec["JobState"] if rec else GONE


def job_field(job_id: str, name: str) -> str | None:
    """One field of ``scontrol show job``, e.g. "Reason", "Restarts", "EligibleTime"."""
    rec = job_record(job_id)
    return rec.get(name) if rec else None


def restart_count(job_id: str) -> int:
    """How often SLURM requeued the job (``Restarts``; SLURM_RESTART_COUNT in the job)."""
    return int(job_field(job_id, "Restarts") or 0)


def _describe(job_id: str) -> str:
    recs = job_records(job_id)
    if not recs:
        return f"job {job_id} is gone"
    keys = ("JobState", "Reason", "Restarts", "ExitCode", "EligibleTime", "StdOut")
    return "; ".join(f"{_element_id(r)}: " + " ".join(f"{k}={r.get(k)}" for k in keys) for r in recs)


def wait_for_state(job_id: str, states: str | Iterable[str], timeout_s: float = 60, poll_s: float = 0.5) -> str:
    """Wait until a job or element is in one of ``states``; return that state.

    Fails at once when the job ends (or is gone) in a state not asked for,
    and raises TimeoutError with the job's record after ``timeout_s``.
    """
    wanted = {states} if isinstance(states, str) else set(states)
    deadline = time.monotonic() + timeout_s
    while True:
        state = job_state(job_id)
        if state in wanted:
            return state
        if state in TERMINAL_STATES or state == GONE:
            raise AssertionError(f"waiting for {sorted(wanted)}, but {_describe(job_id)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {sorted(wanted)} after {timeout_s} s: {_describe(job_id)}")
        time.sleep(poll_s)


def wait_for_requeue(job_id: str, min_restarts: int = 1, timeout_s: float = 120, poll_s: float = 0.5) -> dict[str, str]:
    """Wait until the job is PENDING again with Restarts >= ``min_restarts``;
    return its record. A requeued job waits ~120 s (BeginTime): see release_now."""
    deadline = time.monotonic() + timeout_s
    while True:
        rec = job_record(job_id)
        if rec is None or rec["JobState"] in TERMINAL_STATES:
            raise AssertionError(f"waiting for a requeue, but {_describe(job_id)}")
        if rec["JobState"] == "PENDING" and int(rec.get("Restarts", 0)) >= min_restarts:
            return rec
        if time.monotonic() > deadline:
            raise TimeoutError(f"no requeue after {timeout_s} s: {_describe(job_id)}")
        time.sleep(poll_s)


def wait_until_gone_or_done(job_id: str, timeout_s: float = 60, poll_s: float = 0.5) -> dict[str, str]:
    """Wait until every element of a job or array has ended (or is gone);
    return :func:`array_states` at that moment (empty if all are gone)."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = array_states(job_id)
        if all(s in TERMINAL_STATES for s in states.values()):
            return states
        if time.monotonic() > deadline:
            raise TimeoutError(f"not done after {timeout_s} s: {_describe(job_id)}")
        time.sleep(poll_s)


def release_now(job_id: str) -> None:
    """Make a requeued job eligible now instead of after its ~120 s BeginTime.

    Not within the second of the requeue: slurmd compares credential times in
    whole seconds, and a restart that lands in the second its previous run's
    credential was revoked is refused ("Job credential revoked"): the job FAILS.
    That happened once in CI, 0.6 s after a requeue.
    """
    time.sleep(RELEASE_DELAY_S)
    _run("scontrol", "update", f"JobId={job_id}", "StartTime=now")


def sbatch(
    *args: str,
    script: str | os.PathLike[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> str:
    """Submit with ``sbatch --parsable <args> [script]``; return the job (or array) id."""
    cmd = ["sbatch", "--parsable", *args] + ([str(script)] if script is not None else [])
    env = dict(os.environ)
    env.setdefault("SLURM_CONF", str(_state_dir() / "etc" / "slurm.conf"))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout.strip().split(";")[0]


def submit_urgent_blocker(cpus: int | None = None, seconds: float = 5) -> str:
    """Submit a ``sleep`` to partition ``urgent`` that needs ``cpus`` CPUs (default:
    all the node has), so SLURM preempts running ``mig`` jobs to make room."""
    if cpus is None:
        node = _run("sinfo", "-h", "-N", "-o", "%N").stdout.split()[0]
        cpus = int(_parse_record(_run("scontrol", "show", "node", "-o", node).stdout.strip())["CPUTot"])
    return sbatch(
        "--partition=urgent",
        f"--cpus-per-task={cpus}",
        "--job-name=urgent-blocker",
        "--output=/dev/null",
        f"--wrap=sleep {seconds}",
    )


def _user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def _my_job_ids() -> list[str]:
    return _run("squeue", "-h", "-u", _user(), "-o", "%i").stdout.split()


def cancel_all(timeout_s: float = 60) -> None:
    """Cancel this user's jobs and wait until none holds the node any more.

    Running jobs get SIGKILL first, so a job that ignores SIGTERM (as submitit's
    do) does not hold the node for KillWait.
    """
    if not _my_job_ids():
        return
    user = _user()
    _run("scancel", "-u", user, "--state=RUNNING", "--full", "--signal=KILL", check=False)
    _run("scancel", "-u", user, check=False)
    deadline = time.monotonic() + timeout_s
    while _my_job_ids():
        if time.monotonic() > deadline:
            raise TimeoutError(f"jobs still there {timeout_s} s after scancel: {_my_job_ids()}")
        time.sleep(0.5)
