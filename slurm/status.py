"""Where a run stands: one row per member and the ensemble job's state, from SLURM or the run folder.

States come from SLURM (scontrol, or sacct once scontrol forgot the job) while a
job is queued or running, else from the run folder (videns.member.state): done,
stale, failed; ``stopped`` is a local member that is neither running nor
finished (relaunch to resume it), and ``unknown`` every member of a SLURM run
while the controller does not answer.
"""

import sys
from dataclasses import dataclass, field
from typing import Any

from slurm.queue import ControllerSilent, JobInfo, query_run_jobs
from videns.errors import ConfigError, ExitCode
from videns.folders import MemberFolder, RunFolder
from videns.locks import holder_of
from videns.member.ledger import format_restarts, read_restarts, summarize_restarts
from videns.member.state import NOT_STARTED, UNFINISHED, Expected, member_state, run_expects, task_outcome


@dataclass
class MemberRow:
    """One member as the status table shows it."""

    seed: int
    state: str  # pending | running | requeued | done | stale | failed | stopped | not started | unknown
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
    outcome = task_outcome(run, job_id)
    return None if outcome is None else (outcome.get("status", "error"), outcome.get("error"))


def member_row(
    run: RunFolder,
    seed: int,
    job_id: str,
    slurm: JobInfo | None,
    launcher_alive: bool,
    expected: Expected | None = None,
) -> MemberRow:
    """The member's row: the queue's word while its job is queued or running, else what its files say
    (:func:`videns.member.state.member_state`)."""
    folder = run.member(seed)
    progress = folder.progress()
    costs = summarize_restarts(read_restarts(folder))
    row = MemberRow(
        seed=seed,
        state="",
        epoch=int(progress.get("epoch", 0)),
        max_epochs=progress.get("max_epochs"),
        best_val_accuracy=progress.get("best_val_accuracy") if _has_best(progress) else None,
        best_epoch=progress.get("best_epoch") if _has_best(progress) else None,
        restarts=max(int(progress.get("restarts", 0)), costs["restarts"]),
        restarts_by_cause=costs["restarts_by_cause"],
        lost_steps=costs["replayed_steps"],
        job_id=job_id,
    )
    if slurm is not None:
        row.restarts = max(row.restarts, slurm.restarts)
        if slurm.active:
            row.state = slurm.queue_state
            if slurm.state == "PENDING" and slurm.reason not in ("", "None"):
                row.note = slurm.reason
            return row
    settled = member_state(run, seed, expected)
    row.state, row.note = settled.state, settled.reason
    if settled.state == UNFINISHED:
        row.state, row.note = _unfinished_state(folder, slurm, launcher_alive), settled.reason
    elif settled.state == NOT_STARTED and launcher_alive:
        row.state = "pending"
    return row


def _has_best(progress: dict[str, Any]) -> bool:
    """Whether a validated epoch exists: epochs count from 1, and a member yet to end one records -1."""
    return int(progress.get("best_epoch") or 0) >= 1


def _unfinished_state(folder: MemberFolder, slurm: JobInfo | None, launcher_alive: bool) -> str:
    if slurm is not None:
        return "failed"  # its job has left the queue without finishing it
    if holder_of(folder.lock) is not None:
        return "running"
    return "pending" if launcher_alive else "stopped"


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


def launcher_running(run: RunFolder) -> bool:
    """Does another process hold the run folder's lock (a local launcher that is still running its members)?"""
    return holder_of(run.lock) is not None


def format_rows(rows: list[MemberRow]) -> str:
    header = ("seed", "state", "epoch", "best val acc", "restarts", "lost steps", "job", "")
    lines = [header]
    for r in rows:
        epoch = f"{r.epoch}/{r.max_epochs}" if r.max_epochs else str(r.epoch) if r.epoch else "-"
        best = f"{r.best_val_accuracy:.4f} (epoch {r.best_epoch})" if r.best_val_accuracy is not None else "-"
        lines.append((str(r.seed), r.state, epoch, best, r.restarts_cell(), str(r.lost_steps), r.job_id or "-", r.note))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines) + "\n"


def print_status(run: RunFolder) -> ExitCode:
    """Print the table; OK when every member and the ensemble are done, FAILED when any failed, else NOT_FINISHED."""
    if not run.launch_file.exists():
        raise ConfigError(f"{run.root}: no {run.launch_file.name}; not a run folder written by jobs.launch")
    launch = run.launch()
    member_ids = {int(s): j for s, j in launch.get("member_job_ids", {}).items()}
    ensemble_id = launch.get("ensemble_job_id", "")
    print(f"run {run.root} ({launch.get('cluster', '?')}, launched {launch.get('submitted', '?')})")
    try:
        slurm = query_run_jobs([*member_ids.values(), ensemble_id]) if launch.get("cluster") == "slurm" else None
    except ControllerSilent as err:
        return print_unknown(run, launch, member_ids, ensemble_id, err)
    launcher_alive = launch.get("cluster") == "local" and launcher_running(run)
    rows = [
        member_row(
            run,
            seed,
            member_ids.get(seed, ""),
            (slurm or {}).get(member_ids.get(seed, "")),
            launcher_alive,
            run_expects(run, seed),
        )
        for seed in launch.get("seeds", [])
    ]
    ensemble = ensemble_state(run, ensemble_id, (slurm or {}).get(ensemble_id), launcher_alive)
    print(format_rows(rows), end="")
    report = f"; report {run.ensemble.report_json}" if run.ensemble.report_json.exists() else ""
    print(f"ensemble: {ensemble}" + (f" (job {ensemble_id})" if ensemble_id else "") + report)
    states = {r.state for r in rows} | {ensemble}
    if "failed" in states:
        return ExitCode.FAILED
    return ExitCode.OK if states == {"done"} else ExitCode.NOT_FINISHED


def print_unknown(
    run: RunFolder, launch: dict[str, Any], member_ids: dict[int, str], ensemble_id: str, silence: ControllerSilent
) -> ExitCode:
    """SLURM did not answer: every job's state is unknown, whatever the files say (a job may still be writing)."""
    rows = [
        MemberRow(seed=seed, state="unknown", job_id=member_ids.get(seed, ""), note="the controller did not answer")
        for seed in launch.get("seeds", [])
    ]
    print(format_rows(rows), end="")
    print("ensemble: unknown" + (f" (job {ensemble_id})" if ensemble_id else ""))
    print(f"jobs.status: {silence}", file=sys.stderr)
    return ExitCode.NOT_FINISHED
