"""Where a run stands: one row per member and the ensemble job's state, from SLURM or the run folder.

States come from SLURM (scontrol, or sacct once scontrol forgot the job) when the
run was launched there, else from the run folder: pending, running, requeued,
done, failed; ``stopped`` is a local member that is neither running nor finished
(relaunch to resume it).
"""

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slurm.queue import JobInfo, query_jobs
from videns.errors import ConfigError
from videns.folders import RunFolder
from videns.io import process_alive, read_json
from videns.member.ledger import format_restarts, read_restarts, summarize_restarts


@dataclass
class MemberRow:
    """One member as the status table shows it."""

    seed: int
    state: str  # pending | running | requeued | done | failed | stopped | not started
    epoch: int = 0
    max_epochs: int | None = None
    best_val_accuracy: float | None = None
    best_epoch: int | None = None
    restarts: int = 0
    restarts_by_cause: dict[str, int] = field(default_factory=dict)
    lost_steps: int = 0  # training steps replayed after resumes
    job_id: str = ""
    note: str = ""

    def restarts_cell(self) -> str:
        return format_restarts(self.restarts, self.restarts_by_cause)


def task_result(run: RunFolder, job_id: str) -> tuple[str, Any] | None:
    """How a task ended for good: ("success", None) or ("error", message); None while it has not."""
    outcome = read_json(run.task_outcome(job_id))
    if not isinstance(outcome, dict):
        return None
    return outcome.get("status", "error"), outcome.get("error")


def member_row(run: RunFolder, seed: int, job_id: str, slurm: JobInfo | None, launcher_alive: bool) -> MemberRow:
    folder = run.member(seed)
    progress = folder.progress()
    finished = folder.finished()
    costs = summarize_restarts(read_restarts(folder))
    row = MemberRow(seed=seed, state="", epoch=int(progress.get("epoch", 0)), max_epochs=progress.get("max_epochs"),
                    best_val_accuracy=progress.get("best_val_accuracy") if progress.get("best_epoch") else None,
                    best_epoch=progress.get("best_epoch") or None,
                    restarts=max(int(progress.get("restarts", 0)), costs["restarts"]),
                    restarts_by_cause=costs["restarts_by_cause"], lost_steps=costs["replayed_steps"], job_id=job_id)
    if slurm is not None:
        row.restarts = max(row.restarts, slurm.restarts)
        row.state = slurm.queue_state if slurm.active else "done" if finished else "failed"
        if slurm.state == "PENDING" and slurm.reason not in ("", "None"):
            row.note = slurm.reason
        return row
    outcome = task_result(run, job_id) if job_id else None
    if finished:
        row.state = "done"
    elif outcome is not None and outcome[0] == "error":
        row.state, row.note = "failed", f"see {run.task_log(job_id)}"
    elif progress.get("status") == "running" and writer_alive(progress):
        row.state = "running"
    elif progress:
        row.state = "pending" if launcher_alive else "stopped"
    else:
        row.state = "pending" if launcher_alive else "not started"
    return row


def ensemble_state(run: RunFolder, job_id: str, slurm: JobInfo | None, launcher_alive: bool) -> str:
    report = run.ensemble.report_json
    if slurm is not None:
        if slurm.active:
            return slurm.queue_state
        return "done" if slurm.state == "COMPLETED" and report.exists() else "failed"
    outcome = task_result(run, job_id) if job_id else None
    if outcome is not None:
        return "done" if outcome[0] == "success" else "failed"
    if report.exists():
        return "done"
    return "pending" if launcher_alive else "not run"


def writer_alive(progress: dict[str, Any]) -> bool:
    """Is the process that last wrote progress.json still there (only knowable on its own host)?"""
    if progress.get("host") != socket.gethostname():
        return True  # another node: trust the file
    return process_alive(progress.get("pid"))


def launcher_running(launch: dict[str, Any]) -> bool:
    """Is the local launcher of this run still running (and not us)?"""
    launcher = launch.get("launcher") or {}
    pid = launcher.get("pid")
    if launcher.get("host") != socket.gethostname() or not pid or int(pid) == os.getpid() or not process_alive(pid):
        return False
    try:
        return b"jobs.launch" in Path(f"/proc/{int(pid)}/cmdline").read_bytes()
    except OSError:
        return True  # alive, and we cannot tell what it is


def format_rows(rows: list[MemberRow]) -> str:
    header = ("seed", "state", "epoch", "best val acc", "restarts", "lost steps", "job", "")
    lines = [header]
    for r in rows:
        epoch = f"{r.epoch}/{r.max_epochs}" if r.max_epochs else str(r.epoch) if r.epoch else "-"
        best = f"{r.best_val_accuracy:.4f} (epoch {r.best_epoch})" if r.best_val_accuracy is not None else "-"
        lines.append((str(r.seed), r.state, epoch, best, r.restarts_cell(), str(r.lost_steps), r.job_id or "-",
                      r.note))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines) + "\n"


def print_status(run: RunFolder) -> int:
    """Print the table; 0 when every member and the ensemble are done, 1 when any failed, else 3."""
    if not run.launch_file.exists():
        raise ConfigError(f"{run.root}: no {run.launch_file.name}; not a run folder written by jobs.launch")
    launch = run.launch()
    member_ids = {int(s): j for s, j in launch.get("member_job_ids", {}).items()}
    ensemble_id = launch.get("ensemble_job_id", "")
    slurm = query_jobs([*member_ids.values(), ensemble_id]) if launch.get("cluster") == "slurm" else None
    launcher_alive = launch.get("cluster") == "local" and launcher_running(launch)
    rows = [member_row(run, seed, member_ids.get(seed, ""), (slurm or {}).get(member_ids.get(seed, "")),
                       launcher_alive) for seed in launch.get("seeds", [])]
    ensemble = ensemble_state(run, ensemble_id, (slurm or {}).get(ensemble_id), launcher_alive)
    print(f"run {run.root} ({launch.get('cluster', '?')}, launched {launch.get('submitted', '?')})")
    print(format_rows(rows), end="")
    report = f"; report {run.ensemble.report_json}" if run.ensemble.report_json.exists() else ""
    print(f"ensemble: {ensemble}" + (f" (job {ensemble_id})" if ensemble_id else "") + report)
    states = {r.state for r in rows} | {ensemble}
    if "failed" in states:
        return 1
    return 0 if states == {"done"} else 3
