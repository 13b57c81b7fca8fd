"""What SLURM says about our jobs: ``scontrol`` first (it also knows restarts), ``sacct`` after purge.

Fail closed: a controller that does not answer is never read as "no job is
running". ``scontrol`` is retried with backoff (a busy ``slurmctld`` times out
now and then); if it still does not answer, :class:`ControllerSilent` says so,
and callers refuse to act (relaunch), keep waiting, or show ``unknown``. Only
the controller's own "Invalid job id" means SLURM no longer knows a job, which
it forgets only once the job has ended (MinJobAge); ``sacct`` then gives its
final state where accounting is on.
"""

import logging
import re
import shutil
import subprocess
import time
from dataclasses import dataclass

from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from videns.errors import UserError

log = logging.getLogger(__name__)

QUERY_TIMEOUT_S = 15
QUERY_ATTEMPTS = 3
SLURM_POLL_S = 10.0
# scontrol's answer for a job the controller does not hold (never existed, or purged after it ended).
_UNKNOWN_JOB = re.compile(r"Invalid job id", re.IGNORECASE)


class ControllerSilent(UserError):
    """The SLURM controller did not answer, after retries: nothing can be concluded about the jobs."""


# SLURM's job states, grouped once for every caller. Anything else (COMPLETED, FAILED,
# CANCELLED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, ...) means the job has left the queue.
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT", "SUSPENDED", "RESIZING"})
REQUEUED_STATES = frozenset({"REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "PREEMPTED"})
ACTIVE_STATES = frozenset({"PENDING"}) | RUNNING_STATES | REQUEUED_STATES
_FIELD = re.compile(r"(\S+?)=(\S*)")


@dataclass
class JobInfo:
    """One job (or array element) as SLURM reports it."""

    job_id: str  # "123" or, for an array element, "123_4"
    state: str  # PENDING, RUNNING, COMPLETED, FAILED, ...
    reason: str = ""
    restarts: int = 0
    start_time: str = ""
    end_time: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def queue_state(self) -> str:
        """pending, requeued or running while in the queue; else SLURM's own final state."""
        if self.state == "PENDING":
            return "requeued" if self.restarts > 0 else "pending"
        if self.state in REQUEUED_STATES:
            return "requeued"
        if self.state in RUNNING_STATES:
            return "running"
        return self.state


def query_jobs(job_ids: list[str]) -> dict[str, JobInfo] | None:
    """Jobs keyed by id (array elements as ``A_i``); None when SLURM is not installed here.

    A job the controller no longer knows has ended; it is missing from the result
    unless ``sacct`` still has it. Raises :class:`ControllerSilent` when the
    controller does not answer.
    """
    base_ids = sorted({str(j).split("_")[0] for j in job_ids if j})
    if not base_ids or shutil.which("scontrol") is None:
        return None
    found: dict[str, JobInfo] = {}
    unknown = []
    for base in base_ids:
        jobs = _scontrol(base)
        if jobs is None:
            unknown.append(base)
        else:
            found.update(jobs)
    if unknown:
        found.update(_sacct(unknown) or {})
    return found


def query_run_jobs(job_ids: list[str]) -> dict[str, JobInfo]:
    """:func:`query_jobs` for jobs we know were submitted to SLURM: no scontrol here is no answer either."""
    if shutil.which("scontrol") is None:
        raise ControllerSilent(
            "this run was launched on SLURM and scontrol is not installed here, so whether its "
            "jobs still run is unknown; run this on a machine of the cluster"
        )
    return query_jobs(job_ids) or {}


def ask_slurm(cmd: list[str]) -> str | None:
    """The command's output; None when SLURM answered that it does not know the job.

    Raises :class:`ControllerSilent` after ``QUERY_ATTEMPTS`` tries that timed out or failed otherwise.
    """
    started = time.monotonic()
    try:
        return _ask_with_retries(cmd)
    except _NoAnswer as err:
        raise ControllerSilent(_silence(cmd, started, err)) from None


class _NoAnswer(Exception):
    pass


@retry(
    retry=retry_if_exception_type(_NoAnswer),
    stop=stop_after_attempt(QUERY_ATTEMPTS),
    wait=wait_exponential(multiplier=1, max=8),
    reraise=True,
)
def _ask_with_retries(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise _NoAnswer(f"no answer within {QUERY_TIMEOUT_S} s") from None
    except OSError as err:
        raise _NoAnswer(str(err)) from None
    if out.returncode == 0:
        return out.stdout
    if _UNKNOWN_JOB.search(out.stderr):
        return None
    log.debug("%s exited %d: %s", " ".join(cmd), out.returncode, out.stderr.strip())
    raise _NoAnswer(" ".join(out.stderr.split()) or f"exit status {out.returncode}")


def _silence(cmd: list[str], started: float, err: BaseException) -> str:
    return (
        f"the SLURM controller did not answer '{' '.join(cmd)}' ({QUERY_ATTEMPTS} tries over "
        f"{time.monotonic() - started:.0f} s: {err}), so whether the run's jobs still run is unknown; "
        "try again once 'scontrol ping' answers"
    )


@dataclass
class Allocation:
    """What a running job holds: generic resources by type, and when this run of it started."""

    gres: dict[str, int]
    started: float | None  # seconds since the epoch; a requeued job's StartTime is its current run's


def job_allocation(job_id: str) -> Allocation:
    """From the job's own record: ``TresPerNode`` times its node count, so the GRES are right where no
    GPU is visible to the task (CPU-only test nodes with fake slices), and its StartTime."""
    text = _run(["scontrol", "-o", "show", "job", str(job_id)])
    fields = dict(_FIELD.findall(text or ""))
    return Allocation(gres=_gres(fields), started=_epoch_seconds(fields.get("StartTime", "")))


def _epoch_seconds(stamp: str) -> float | None:
    try:
        return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))  # scontrol prints local time
    except ValueError:
        return None


def _gres(fields: dict[str, str]) -> dict[str, int]:
    nodes = int(fields.get("NumNodes", "1").split("-")[0] or 1)
    gres: dict[str, int] = {}
    for item in filter(None, fields.get("TresPerNode", "").split(",")):
        item = item.removeprefix("gres:").removeprefix("gres/")  # SLURM 22.05 writes gres:, later ones gres/
        name, _, count = item.rpartition(":")
        if name and count.isdigit():
            gres[name] = gres.get(name, 0) + int(count) * nodes
        elif item:
            gres[item] = gres.get(item, 0) + nodes
    return gres


def wait_while_active(job_ids: list[str], poll_s: float = SLURM_POLL_S) -> None:
    """Block until none of the jobs is queued or running (requeued ones included), or SLURM forgot them.

    A silent controller is not an answer: it is logged and asked again.
    """
    while True:
        try:
            jobs = query_jobs(job_ids) or {}
        except ControllerSilent as err:
            log.warning("%s; still waiting", err)
        else:
            if not any(info.active for info in jobs.values()):
                return
        time.sleep(poll_s)


def _run(cmd: list[str]) -> str | None:
    """Best effort, for facts that only annotate (a job's allocation): None on any failure."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def _scontrol(job_id: str) -> dict[str, JobInfo] | None:
    """The job's (or array's) elements; None when the controller says it does not know the job."""
    text = ask_slurm(["scontrol", "-o", "show", "job", job_id])
    if text is None or not text.strip():
        return None
    jobs = {}
    for line in text.splitlines():
        fields = dict(_FIELD.findall(line))
        if "JobState" not in fields:
            continue
        info = dict(
            state=fields["JobState"],
            reason=fields.get("Reason", ""),
            restarts=int(fields.get("Restarts", 0) or 0),
            start_time=fields.get("StartTime", ""),
            end_time=fields.get("EndTime", ""),
        )
        array_id = fields.get("ArrayJobId")
        if array_id and "ArrayTaskId" in fields:
            for index in expand_indices(fields["ArrayTaskId"]):
                jobs[f"{array_id}_{index}"] = JobInfo(f"{array_id}_{index}", **info)
        else:
            jobs[fields["JobId"]] = JobInfo(fields["JobId"], **info)
    return jobs


def _sacct(job_ids: list[str]) -> dict[str, JobInfo] | None:
    if shutil.which("sacct") is None:
        return None
    cmd = ["sacct", "-n", "-P", "-X", "-o", "JobID,State,Start,End"]
    for job_id in job_ids:
        cmd += ["-j", job_id]
    text = _run(cmd)
    if text is None:
        return None
    jobs = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 4:
            continue
        job_id, state, start, end = parts[:4]
        state = state.split()[0] if state else "UNKNOWN"  # "CANCELLED by 0"
        match = re.fullmatch(r"(\d+)_\[(.+)\]", job_id)
        ids = [f"{match.group(1)}_{i}" for i in expand_indices(match.group(2))] if match else [job_id]
        for one in ids:
            jobs[one] = JobInfo(one, state, start_time=start, end_time=end)
    return jobs


def expand_indices(spec: str) -> list[int]:
    """``"0,2-4%2"`` -> [0, 2, 3, 4]."""
    spec = spec.split("%")[0]
    indices = []
    for part in filter(None, spec.split(",")):
        low, _, high = part.partition("-")
        indices.extend(range(int(low), int(high or low) + 1))
    return indices
