"""The run folder: where a launch writes, and what status reads back.

    RUN/config.yaml              resolved member config (seed = base seed); every task parses it
    RUN/launch.json              seeds, job ids, cluster, time, git revision, command (+ earlier launches)
    RUN/members/seed_<N>/        one member (train_member's files)
    RUN/ensemble/                jobs.ensemble_eval's report
    RUN/logs/<job id>/           submitit's pickles and stdout/stderr (<array id>_<index> per element)
"""

import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs._cluster import LOGS_DIR, code_root
from jobs._queue import JobInfo
from videns.ensemble.members import LAUNCH_FILE, LAUNCH_SEEDS_KEY, member_dir
from videns.training import persist

RUN_CONFIG = "config.yaml"
# Written by each task when it ends for good, beside submitit's <job>_<task>_result.pkl.
OUTCOME_SUFFIX = "_outcome.json"
ENSEMBLE_DIR = "ensemble"
REPORT_FILE = "report.json"
RUNNING_SLURM = {"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT", "SUSPENDED", "RESIZING"}
REQUEUED_SLURM = {"REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "PREEMPTED"}


class RunFolder:
    """Paths and records of one run folder."""

    def __init__(self, root: Path):
        self.root = Path(root).absolute()

    @property
    def config(self) -> Path:
        return self.root / RUN_CONFIG

    @property
    def launch_file(self) -> Path:
        return self.root / LAUNCH_FILE

    @property
    def logs(self) -> Path:
        return self.root / LOGS_DIR

    @property
    def ensemble(self) -> Path:
        return self.root / ENSEMBLE_DIR

    @property
    def report(self) -> Path:
        return self.ensemble / REPORT_FILE

    def member(self, seed: int) -> Path:
        return member_dir(self.root, seed)

    def launch(self) -> dict[str, Any]:
        return persist.read_json(self.launch_file) or {}

    def seeds(self) -> list[int]:
        return list(self.launch().get(LAUNCH_SEEDS_KEY, []))

    def write_launch(self, record: dict[str, Any]) -> None:
        """Write the new launch record, keeping earlier launches under ``previous``."""
        old = self.launch()
        if old and old.get("launch_id") != record.get("launch_id"):
            record["previous"] = old.pop("previous", []) + [old]
        elif old:
            record["previous"] = old.get("previous", [])
        persist.write_json_atomically(self.launch_file, record)

    def task_log(self, job_id: str, stream: str = "err") -> Path:
        return self.logs / job_id / f"{job_id}_0_log.{stream}"

    def task_result(self, job_id: str) -> tuple[str, Any] | None:
        """How a task ended for good: ("success", None) or ("error", message); None while it has not."""
        outcome = persist.read_json(self.logs / job_id / f"{job_id}_0{OUTCOME_SUFFIX}")
        if not outcome:
            return None
        return outcome.get("status", "error"), outcome.get("error")


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=code_root(), capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=code_root(),
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (rev or "unknown") + ("+dirty" if dirty else "")


# ---------------------------------------------------------------- state of a run

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
    job_id: str = ""
    note: str = ""


def member_row(run: RunFolder, seed: int, job_id: str, slurm: JobInfo | None, launcher_alive: bool) -> MemberRow:
    folder = run.member(seed)
    progress = persist.read_json(folder / persist.PROGRESS_FILE) or {}
    finished = (persist.read_json(folder / persist.RESULT_FILE) or {}).get("status") == "finished"
    row = MemberRow(seed=seed, state="", epoch=int(progress.get("epoch", 0)), max_epochs=progress.get("max_epochs"),
                    best_val_accuracy=progress.get("best_val_accuracy") if progress.get("best_epoch") else None,
                    best_epoch=progress.get("best_epoch") or None, restarts=int(progress.get("restarts", 0)),
                    job_id=job_id)
    if slurm is not None:
        row.restarts = max(row.restarts, slurm.restarts)
        row.state = _slurm_member_state(slurm, finished)
        if slurm.state == "PENDING" and slurm.reason not in ("", "None"):
            row.note = slurm.reason
        return row
    outcome = run.task_result(job_id) if job_id else None
    if finished:
        row.state = "done"
    elif outcome is not None and outcome[0] == "error":
        row.state, row.note = "failed", f"see {run.task_log(job_id)}"
    elif progress.get("status") == "running" and _alive(progress):
        row.state = "running"
    elif progress:
        row.state = "pending" if launcher_alive else "stopped"
    else:
        row.state = "pending" if launcher_alive else "not started"
    return row


def _slurm_member_state(info: JobInfo, finished: bool) -> str:
    if info.state == "PENDING":
        return "requeued" if info.restarts > 0 else "pending"
    if info.state in REQUEUED_SLURM:
        return "requeued"
    if info.state in RUNNING_SLURM:
        return "running"
    return "done" if finished else "failed"


def ensemble_state(run: RunFolder, job_id: str, slurm: JobInfo | None, launcher_alive: bool) -> str:
    if slurm is not None:
        if slurm.state == "PENDING":
            return "requeued" if slurm.restarts else "pending"
        if slurm.state in REQUEUED_SLURM:
            return "requeued"
        if slurm.state in RUNNING_SLURM:
            return "running"
        return "done" if slurm.state == "COMPLETED" and run.report.exists() else "failed"
    outcome = run.task_result(job_id) if job_id else None
    if outcome is not None:
        return "done" if outcome[0] == "success" else "failed"
    if run.report.exists():
        return "done"
    return "pending" if launcher_alive else "not run"


def _alive(progress: dict[str, Any]) -> bool:
    """Is the process that last wrote progress.json still there (only knowable on its own host)?"""
    if progress.get("host") != socket.gethostname():
        return True  # another node: trust the file
    return pid_alive(progress.get("pid"))


def launcher_running(launch: dict[str, Any]) -> bool:
    """Is the local launcher of this run still running (and not us)?"""
    launcher = launch.get("launcher") or {}
    pid = launcher.get("pid")
    if launcher.get("host") != socket.gethostname() or not pid or int(pid) == os.getpid() or not pid_alive(pid):
        return False
    try:
        return b"jobs.launch" in Path(f"/proc/{int(pid)}/cmdline").read_bytes()
    except OSError:
        return True  # alive, and we cannot tell what it is


def pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def format_rows(rows: list[MemberRow]) -> str:
    header = ("seed", "state", "epoch", "best val acc", "restarts", "job", "")
    lines = [header]
    for r in rows:
        epoch = f"{r.epoch}/{r.max_epochs}" if r.max_epochs else str(r.epoch) if r.epoch else "-"
        best = f"{r.best_val_accuracy:.4f} (epoch {r.best_epoch})" if r.best_val_accuracy is not None else "-"
        lines.append((str(r.seed), r.state, epoch, best, str(r.restarts), r.job_id or "-", r.note))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines) + "\n"


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=2)
