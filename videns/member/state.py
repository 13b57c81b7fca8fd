"""What a member of a run is, by its files alone: done only when it finished what its last launch asked for.

One rule for the launcher's summary, ``jobs.status`` and the ensemble report:

- ``failed``: its last task ended in error (the task's outcome file), or its
  training stopped on an error it recorded in ``progress.json``, even when an
  older ``result.json`` says it had finished before;
- ``done``: finished under the config its last task was launched with (same
  config hash) and with that launch's epochs;
- ``stale``: finished, but under another config than its last task's;
- ``unfinished``: started and not finished (stopped, killed, still training,
  or finished at a ``max_epochs`` that the run has raised since);
- ``not started``: no trace of training.

What the queue says (pending, running, requeued) is the cluster layer's to add.
"""

from dataclasses import dataclass
from typing import Any

from videns.config import MemberConfig, config_hash, run_member_config
from videns.folders import RunFolder
from videns.io import read_json

DONE, STALE, FAILED, UNFINISHED, NOT_STARTED = "done", "stale", "failed", "unfinished", "not started"
TASKS_KEY = "tasks"  # launch.json: {seed: what its task was launched to do}


@dataclass
class MemberState:
    state: str
    reason: str = ""


def task_outcome(run: RunFolder, job_id: str) -> dict[str, Any] | None:
    """How a task ended for good: ``{"status": "success"}`` or ``{"status": "error", "error": ...}``; None while
    it has not (or when no task was recorded)."""
    outcome = read_json(run.task_outcome(job_id)) if job_id else None
    return outcome if isinstance(outcome, dict) else None


def last_job_id(run: RunFolder, seed: int) -> str:
    return str(run.launch().get("member_job_ids", {}).get(str(seed)) or "")


@dataclass
class Expected:
    """What a member's last task was launched to do."""

    config_hash: str
    max_epochs: int


def launched_task(cfg: MemberConfig, seed: int) -> dict[str, Any]:
    """The launch record's entry for member ``seed``'s task (``cfg`` is the run's member config, any seed)."""
    return {"config_hash": config_hash({**cfg.resolved, "seed": seed}), "max_epochs": cfg.trainer.max_epochs}


def run_expects(run: RunFolder, seed: int) -> Expected | None:
    """From the newest launch that gave member ``seed`` a task; for runs launched before launches recorded
    that, from the run's config."""
    launch = run.launch()
    for record in (launch, *reversed(launch.get("previous", []))):
        task = (record.get(TASKS_KEY) or {}).get(str(seed))
        if isinstance(task, dict) and "config_hash" in task and "max_epochs" in task:
            return Expected(str(task["config_hash"]), int(task["max_epochs"]))
    if not run.config_for(seed).exists():
        return None
    cfg = run_member_config(run.config_for(seed), seed, run.member(seed).root)
    return Expected(cfg.config_hash, cfg.trainer.max_epochs)


def member_state(run: RunFolder, seed: int, expected: Expected | None = None) -> MemberState:
    folder, job_id = run.member(seed), last_job_id(run, seed)
    outcome, progress, result = task_outcome(run, job_id), folder.progress(), folder.result()
    see = f"see {run.task_log(job_id)} and {folder.log}" if job_id else f"see {folder.log}"
    if outcome is not None and outcome.get("status") != "success":
        return MemberState(FAILED, f"its last task (job {job_id}) ended in error: {outcome.get('error')}; {see}")
    if progress.get("status") == "failed":
        return MemberState(FAILED, f"{progress.get('reason') or 'training stopped on an error'}; {see}")
    if result.get("status") == "finished":
        return _finished_state(result, expected)
    if not progress and not folder.history.exists():
        return MemberState(NOT_STARTED)
    return MemberState(
        UNFINISHED, f"{progress.get('status', 'no progress.json')}, {progress.get('epoch', 0)} epoch(s) done"
    )


def _finished_state(result: dict[str, Any], expected: Expected | None) -> MemberState:
    if expected is None:
        return MemberState(DONE)
    trained_under = result.get("config_hash")
    if trained_under and trained_under != expected.config_hash:
        return MemberState(
            STALE,
            f"finished under config hash {trained_under}, but its last task was launched "
            f"under {expected.config_hash}; train it in a new run folder",
        )
    epochs = int(result.get("epoch", 0))
    if max_epochs_raised(result.get("stop_reason"), epochs, expected.max_epochs):
        return MemberState(UNFINISHED, f"finished {epochs} epochs, and its last launch asked for {expected.max_epochs}")
    return MemberState(DONE)


def max_epochs_raised(stop_reason: str | None, epoch: int, max_epochs: int) -> bool:
    """A member that stopped at ``max_epochs`` trains on when ``max_epochs`` now allows more epochs."""
    return stop_reason == "max_epochs" and epoch < max_epochs
