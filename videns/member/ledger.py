"""What each restart of a member cost: why it stopped, the steps it had to replay, and how long it waited.

Two facts are kept while training, both cheap:
- ``progress.json`` (rewritten at every save) says how the last run stopped:
  ``interrupted`` with the signal, or still ``running`` when a kill or a node
  failure gave it no chance to save;
- ``reached_step`` holds the highest step the member ever reached, 8 bytes
  rewritten in place after every step (no fsync: a killed process's writes stay
  in the page cache), so a resume knows how many steps it replays.

At the next start :func:`restart_record` turns them into one line of
``restarts.jsonl``. Causes:

- ``time_limit``: USR2 came at the run's time limit minus the signal delay;
- ``preempted``: USR2 earlier than that, or SIGTERM after which SLURM requeued
  the same job;
- ``killed``: no save after the last signal (SIGKILL, OOM, node failure);
- ``stopped``: stopped by the user (SIGTERM or Ctrl-C, then started again by hand);
- ``disk_full``: a write failed for want of space or quota (ENOSPC, EDQUOT);
- ``error``: a write failed otherwise (read-only, an I/O error).

A failed run that could not even record its failure (a disk that refuses every
write) still says ``running``, and counts as ``killed``.
"""

import os
import signal
import socket
import struct
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from videns.folders import MemberFolder
from videns.io import WriteFailed, append_jsonl, read_jsonl, write_failure, writing_into

DISK_FULL, WRITE_ERROR = "disk_full", "error"
CAUSES = ("preempted", "time_limit", "killed", "stopped", DISK_FULL, WRITE_ERROR)
# A USR2 this close to the time limit minus the signal delay is the time limit's: SLURM may send the
# signal up to 60 s earlier than asked (sbatch --signal), and a task starts a little after its job.
TIME_LIMIT_SLACK_S = 90.0
_MARK = struct.Struct("<q")


class StepMark:
    """The highest global step reached, kept in ``MEMBER/reached_step``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with writing_into(self.path.parent, self.path.name, _MARK.size):
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)

    def reached(self, step: int) -> None:
        try:
            os.pwrite(self.fd, _MARK.pack(step), 0)
        except OSError as err:  # not a context manager: this runs at every step
            raise write_failure(err, self.path.parent, self.path.name, _MARK.size) from err

    def close(self) -> None:
        os.close(self.fd)


def read_mark(path: Path) -> tuple[int, float] | None:
    """(highest step reached, when) or None before the first step."""
    try:
        data, when = Path(path).read_bytes(), Path(path).stat().st_mtime
    except OSError:
        return None
    return (_MARK.unpack(data[: _MARK.size])[0], when) if len(data) >= _MARK.size else None


def stop_cause(signum: int | None, context: Mapping[str, Any], now: float) -> str:
    """How a run stopped by ``signum`` is counted, as far as is known when it stops.

    SIGTERM stays ``signal`` until the next start tells a requeue (preempted)
    from a start by hand (stopped).
    """
    if signum == signal.SIGUSR2:
        limit, delay, started = (context.get(k) for k in ("time_limit_s", "signal_delay_s", "run_started"))
        if context.get("cluster") == "local":
            return "time_limit"  # submitit's local executor sends USR2 only at its timeout
        if None not in (limit, delay, started):
            return "time_limit" if now - started >= limit - delay - TIME_LIMIT_SLACK_S else "preempted"
        return "stopped"
    if signum == signal.SIGTERM:
        return "signal"
    return "stopped"


def restart_record(
    previous: Mapping[str, Any],
    mark: tuple[int, float] | None,
    last_restart: Mapping[str, Any],
    resumed_step: int,
    context: Mapping[str, Any],
    now: float,
) -> dict[str, Any]:
    """One restart, from the previous run's progress.json, the step mark and the checkpoint resumed."""
    reached_step, reached_at = mark if mark else (resumed_step, 0.0)
    cause = _previous_stop_cause(previous, context)
    stopped_at = max(float(previous.get("updated", 0.0)), reached_at, float(last_restart.get("started", 0.0)))
    return {
        "cause": cause,
        "signal": previous.get("signal") if cause != "killed" else None,
        "stopped": stopped_at,
        "started": now,
        "queued_s": max(0.0, now - stopped_at),
        "resumed_step": resumed_step,
        "reached_step": max(reached_step, resumed_step),
        "replayed_steps": max(0, reached_step - resumed_step),
        "job_id": context.get("job_id"),
        "previous_job_id": previous.get("job_id"),
    }


def _previous_stop_cause(previous: Mapping[str, Any], context: Mapping[str, Any]) -> str:
    status = previous.get("status")
    if status == "failed":
        return previous.get("stop_cause") if previous.get("stop_cause") in (DISK_FULL, WRITE_ERROR) else WRITE_ERROR
    if status != "interrupted":
        return "killed"
    cause = previous.get("stop_cause") or "stopped"
    if cause == "signal":
        job = context.get("job_id")
        cause = "preempted" if job is not None and job == previous.get("job_id") else "stopped"
    return cause


def failure_cause(err: WriteFailed) -> str:
    """``disk_full`` when freeing space is the fix, ``error`` otherwise."""
    return DISK_FULL if err.disk_full else WRITE_ERROR


def failed_progress(
    last: Mapping[str, Any], reason: str, cause: str, context: Mapping[str, Any], now: float
) -> dict[str, Any]:
    """progress.json once a write failed: the last save's record, marked ``failed`` with the one-line reason.

    ``last`` is progress.json as the last committed save left it, so the epoch and
    step it states are still those of the newest checkpoint on disk.
    """
    record = {key: value for key, value in last.items() if key != "signal"}
    record.update(
        status="failed",
        reason=reason,
        stop_cause=cause,
        job_id=context.get("job_id"),
        host=socket.gethostname(),
        pid=os.getpid(),
        updated=now,
    )
    return record


def record_restart(
    folder: MemberFolder, previous: Mapping[str, Any], resumed_step: int, context: Mapping[str, Any]
) -> dict[str, Any]:
    """Append this start's restart record to ``restarts.jsonl`` and return it."""
    history = read_restarts(folder)
    record = restart_record(
        previous, read_mark(folder.reached_step), history[-1] if history else {}, resumed_step, context, time.time()
    )
    append_jsonl(folder.restarts, record)
    return record


def read_restarts(folder: MemberFolder) -> list[dict[str, Any]]:
    """The member's restart records; a line cut by a kill ends them."""
    return read_jsonl(folder.restarts)


def format_restarts(restarts: int, by_cause: Mapping[str, int] | None) -> str:
    """``3 (preempted 2, killed 1)``: the count, then each cause that occurred."""
    causes = ", ".join(f"{cause} {n}" for cause, n in (by_cause or {}).items() if n)
    return f"{restarts} ({causes})" if causes else str(restarts)


def summarize_restarts(records: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Restarts by cause, steps replayed and seconds queued, for reports and the status table."""
    return {
        "restarts": len(records),
        "restarts_by_cause": {cause: sum(r.get("cause") == cause for r in records) for cause in CAUSES},
        "replayed_steps": int(sum(r.get("replayed_steps", 0) for r in records)),
        "queued_seconds": float(sum(r.get("queued_s", 0.0) for r in records)),
    }
