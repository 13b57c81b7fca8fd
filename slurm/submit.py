"""Submitting a run: one SLURM array plus an ``afterany`` ensemble job, or the same tasks locally."""

import logging
import signal
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from slurm.cluster import (
    LOG_PATTERN,
    ClusterConfig,
    local_executor,
    local_plan,
    local_task_env,
    slurm_executor,
    slurm_parameters,
)
from slurm.queue import wait_while_active
from slurm.status import member_row, task_result
from slurm.submitit_private import terminate_local_job
from slurm.tasks import EnsembleTask, MemberTask
from videns.folders import RunFolder
from videns.member.state import run_expects

log = logging.getLogger(__name__)
POLL_S = 1.0


@dataclass
class Submitted:
    """Job ids of one launch."""

    member_job_ids: dict[int, str]
    ensemble_job_id: str
    array_job_id: str = ""
    failed_members: list[int] = field(default_factory=list)
    ensemble_ok: bool = True


def job_name(run: RunFolder) -> str:
    return f"videns-{run.root.name}"


def submit_slurm(run: RunFolder, seeds: list[int], cfg: ClusterConfig, evaluation: EnsembleTask) -> Submitted:
    """An array of ``seeds`` (none: every member has finished) and the ensemble job after it."""
    folder = run.logs / LOG_PATTERN
    guard = {"guard": run.root, "allow_shared_group": evaluation.allow_shared_group}
    jobs, array_id = [], ""
    if seeds:
        members = slurm_executor(folder, cfg, slurm_parameters(cfg, job_name(run), **guard))
        jobs = members.submit_array(
            [MemberTask(str(run.root), seed, cfg.cpus_per_task, limits=task_limits(cfg)) for seed in seeds]
        )
        array_id = jobs[0].job_id.split("_")[0]
    ensemble = slurm_executor(
        folder,
        cfg,
        slurm_parameters(
            cfg,
            job_name(run) + "-ensemble",
            ensemble=True,
            dependency=f"afterany:{array_id}" if array_id else None,
            **guard,
        ),
    )
    ensemble_job = ensemble.submit(evaluation)
    return Submitted({seed: job.job_id for seed, job in zip(seeds, jobs)}, ensemble_job.job_id, array_id)


def task_limits(cfg: ClusterConfig) -> tuple[float, float]:
    """(time limit, signal delay) of a member task, in seconds."""
    return cfg.time_min * 60.0, float(cfg.signal_delay_s)


def wait_slurm(submitted: Submitted) -> None:
    """Block until the ensemble job (which runs after every member) has left the queue."""
    wait_while_active([submitted.ensemble_job_id])


def run_local(
    run: RunFolder,
    seeds: list[int],
    cfg: ClusterConfig,
    evaluation: EnsembleTask,
    say: Callable[[str], None],
    on_submit: Callable[[Submitted], None],
) -> Submitted:
    """Run the members (a few at a time) and then the ensemble job here, through submitit's LocalExecutor.

    Ctrl-C stops the members cleanly: they get SIGTERM, save at their next step and
    exit; the same command resumes them.
    """
    plan = local_plan(cfg, len(seeds))
    if seeds:
        say(
            f"running {len(seeds)} member(s) here, {plan.parallelism} at a time with {plan.threads} "
            f"thread(s) each; logs in {run.logs}"
        )
    else:
        say("every member has finished; evaluating the ensemble")
    executor = local_executor(run.logs / LOG_PATTERN, cfg)
    submitted = Submitted({}, "")
    queue, running = list(seeds), {}
    try:
        while queue or running:
            while queue and len(running) < plan.parallelism:
                seed = queue.pop(0)
                with sigint_ignored_in_children():
                    running[seed] = executor.submit(
                        MemberTask(str(run.root), seed, plan.threads, local_task_env(), task_limits(cfg))
                    )
                submitted.member_job_ids[seed] = running[seed].job_id
                on_submit(submitted)
            for seed, job in list(running.items()):
                if job.done():
                    del running[seed]
                    _report_member(run, seed, job.job_id, submitted, say)
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        stop_local_jobs(running, say)
        raise
    with sigint_ignored_in_children():
        job = local_executor(run.logs / LOG_PATTERN, cfg, ensemble=True).submit(
            replace(evaluation, env=local_task_env())
        )
    submitted.ensemble_job_id = job.job_id
    on_submit(submitted)
    while not job.done():
        time.sleep(POLL_S)
    outcome = task_result(run, job.job_id)
    submitted.ensemble_ok = outcome is not None and outcome[0] == "success"
    print_ensemble_output(run, job.job_id, say)
    return submitted


def print_ensemble_output(run: RunFolder, job_id: str, say: Callable[[str], None] = print) -> None:
    """The ensemble job's table (its stdout without submitit's own log lines)."""
    stdout = run.task_log(job_id, "out")
    if stdout.exists():
        say("\n".join(line for line in stdout.read_text().splitlines() if not line.startswith("submitit ")))


def _report_member(run: RunFolder, seed: int, job_id: str, submitted: Submitted, say) -> None:
    """What the member's task achieved, by the same rule as jobs.status; anything but done fails the launch."""
    row = member_row(run, seed, job_id, None, launcher_alive=False, expected=run_expects(run, seed))
    if row.state == "done":
        say(
            f"seed {seed}: done, best val accuracy {row.best_val_accuracy:.4f} at epoch {row.best_epoch} "
            f"({row.epoch} epochs, {row.restarts} restart(s))"
        )
    else:
        submitted.failed_members.append(seed)
        say(f"seed {seed}: FAILED ({row.state}): {row.note or 'see ' + str(run.member(seed).log)}")


def stop_local_jobs(running: dict, say) -> None:
    """SIGTERM to each running controller, which forwards it to its task; the task saves and exits."""
    say(f"stopping {len(running)} running member(s); each saves at its next step")
    for job in running.values():
        terminate_local_job(job)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(not job.done() for job in running.values()):
        time.sleep(0.2)


@contextmanager
def sigint_ignored_in_children():
    """Children started here inherit SIGINT ignored, so a terminal's Ctrl-C reaches only the launcher,
    which then stops them with SIGTERM (saved at a step boundary) instead of a KeyboardInterrupt mid-step."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
