"""What SLURM says about our jobs: ``scontrol`` first (it also knows restarts), ``sacct`` after purge.

Both are optional: on a laptop, or once SLURM forgot the jobs and accounting is
off, the caller falls back to the run folder.
"""

import re
import shutil
import subprocess
import time
from dataclasses import dataclass

QUERY_TIMEOUT_S = 20
SLURM_POLL_S = 10.0
# SLURM's job states, grouped once for every caller. Anything else (COMPLETED, FAILED,
# CANCELLED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, ...) means the job has left the queue.
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT", "SUSPENDED",
                            "RESIZING"})
REQUEUED_STATES = frozenset({"REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "PREEMPTED"})
ACTIVE_STATES = frozenset({"PENDING"}) | RUNNING_STATES | REQUEUED_STATES
_FIELD = re.compile(r"(\S+?)=(\S*)")


@dataclass
class JobInfo:
    """One job (or array element) as SLURM reports it."""

    job_id: str          # "123" or, for an array element, "123_4"
    state: str           # PENDING, RUNNING, COMPLETED, FAILED, ...
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
    """Jobs keyed by id (array elements as ``A_i``); None when SLURM cannot be asked at all."""
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
    """Block until none of the jobs is queued or running (requeued ones included), or SLURM forgot them."""
    while True:
        jobs = query_jobs(job_ids) or {}
        if not any(info.active for info in jobs.values()):
            return
        time.sleep(poll_s)


def _run(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def _scontrol(job_id: str) -> dict[str, JobInfo] | None:
    text = _run(["scontrol", "-o", "show", "job", job_id])
    if not text or not text.strip():
        return None
    jobs = {}
    for line in text.splitlines():
        fields = dict(_FIELD.findall(line))
        if "JobState" not in fields:
            continue
        info = dict(state=fields["JobState"], reason=fields.get("Reason", ""),
                    restarts=int(fields.get("Restarts", 0) or 0),
                    start_time=fields.get("StartTime", ""), end_time=fields.get("EndTime", ""))
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
