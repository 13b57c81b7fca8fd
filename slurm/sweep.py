"""A sweep on the cluster: the worker as a submitit task, K of them on SLURM or here, and the results.

A task holds only the run folder and its array index; the sweep's state is on disk
(journal, claim files, member checkpoints), so a requeued task simply starts a new
worker, which resumes the trial its predecessor released.

Signals, inside a worker task (as for slurm.tasks.MemberTask): SIGUSR2 or SIGTERM
stop the running trial at its next step boundary (checkpoint saved), the trial's
claim is released, then USR2 hands over to submitit's requeue, and SIGTERM under
SLURM waits to be killed so that SLURM requeues the preempted task.
"""

import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import submitit
import yaml

from slurm.cluster import (
    LOG_PATTERN,
    ClusterConfig,
    choose_cluster,
    local_executor,
    render_sbatch,
    slurm_executor,
    slurm_parameters,
)
from slurm.queue import wait_while_active
from slurm.records import git_revision, now_iso
from slurm.submit import sigint_ignored_in_children, stop_local_jobs
from slurm.sweep_request import SweepRequest
from slurm.tasks import hand_over, job_context, outcome_recorded, task_succeeded
from videns.errors import ExitCode
from videns.folders import check_private, use_private_umask
from videns.io import append_jsonl, read_jsonl
from videns.sweep import SweepFolder, WorkerIdentity, export_results, load_study, run_worker
from videns.sweep.claims import schedule_lock
from videns.sweep.prepare import open_sweep
from videns.training.interrupt import StopSignals

log = logging.getLogger(__name__)
POLL_S = 1.0


class SweepWorkerTask:
    """Worker ``index`` of the sweep in ``run_dir``: take, train and tell trials until none is left."""

    def __init__(self, run_dir: str, index: int, threads: int | None = None, allow_shared_group: bool = False):
        self.run_dir = str(run_dir)
        self.index = int(index)
        self.threads = threads
        self.allow_shared_group = allow_shared_group

    def __call__(self) -> dict[str, Any]:
        with outcome_recorded():
            return self._work()

    def _work(self) -> dict[str, Any]:
        import torch

        from videns.logs import setup_logging

        use_private_umask()
        check_private(Path(self.run_dir), self.allow_shared_group)
        setup_logging()
        if self.threads:
            torch.set_num_threads(self.threads)
        context = job_context()
        me = WorkerIdentity.current(job_id=context.get("job_id"), task_index=self.index)
        with StopSignals() as stop:
            report = run_worker(SweepFolder(Path(self.run_dir)), me, stop, context)
            if report.interrupted:
                hand_over(stop, report.signum, f"sweep worker {self.index}")
        return {"worker_id": report.worker_id, "trials": [(t.number, t.state, t.value) for t in report.trials]}

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """Called by submitit inside its USR2 handler: only build the resubmission; state is on disk."""
        return submitit.helpers.DelayedSubmission(
            SweepWorkerTask(self.run_dir, self.index, self.threads, self.allow_shared_group)
        )

    def __repr__(self) -> str:
        return f"SweepWorkerTask(run_dir={self.run_dir!r}, index={self.index}, threads={self.threads})"


def run_sweep(request: SweepRequest, slurm: ClusterConfig, say: Callable[[str], None] = print) -> int:
    """Check and prepare the sweep folder, then run or submit its workers (or one worker, or only the export)."""
    folder = SweepFolder(request.run_dir)
    check_private(folder.root, request.allow_shared_group)  # its files name classes that trials import
    choices = {"sampler": request.sampler, "pruner": request.pruner, "objective": request.objective}
    settings = open_sweep(
        folder,
        request.config,
        request.search,
        choices,
        request.member,
        request.member_overrides,
        request.trials,
        write=not (request.dry_run or request.print_config or request.mode == "export"),
        check_data=not (request.print_config or request.mode == "export"),
    )
    if request.print_config:
        say(yaml.safe_dump(settings.spec.as_sweep_file(), sort_keys=False, default_flow_style=None).rstrip())
        return 0
    if request.mode == "export":
        return print_results(folder, say)
    if request.mode == "worker":
        return run_one_worker(folder, say)
    if request.dry_run:
        cluster = request.cluster if request.cluster != "auto" else choose_cluster("auto", last_cluster(folder))
        say(f"# dry run: nothing written, nothing submitted. Sweep folder would be {folder.root}")
        say(
            f"# {request.array} worker task(s) ({'here' if cluster == 'local' else 'SLURM array'}), "
            f"{settings.trials} trials of {len(settings.spec.keys)} param(s)"
        )
        say(
            render_sbatch(
                folder.logs / LOG_PATTERN,
                slurm_parameters(
                    slurm, job_name(folder), guard=folder.root, allow_shared_group=request.allow_shared_group
                ),
                request.array if request.array > 1 else None,
            )
        )
        return 0
    cluster = choose_cluster(request.cluster, last_cluster(folder))
    record = {
        "time": now_iso(),
        "cluster": cluster,
        "array": request.array,
        "trials": settings.trials,
        "git_revision": git_revision(),
        "command": request.command,
    }
    if cluster == "slurm":
        return _submit_and_report(folder, request, slurm, record, say)
    append_jsonl(folder.launches, record)
    try:
        failed = run_local_workers(folder, request.array, slurm, say=say, allow_shared_group=request.allow_shared_group)
    except KeyboardInterrupt:
        print(
            f"stopped; running trials are saved and released: python -m jobs.sweep --run_dir {folder.root} "
            "continues the sweep",
            file=sys.stderr,
        )
        return ExitCode.CTRL_C
    code = print_results(folder, say)
    return ExitCode.FAILED if failed and code == ExitCode.OK else code


def last_cluster(folder: SweepFolder) -> str | None:
    """Where the sweep's last launch ran its workers (None for a new sweep)."""
    launches = read_jsonl(folder.launches)
    return launches[-1].get("cluster") if launches and isinstance(launches[-1], dict) else None


def _submit_and_report(
    folder: SweepFolder, request: SweepRequest, slurm: ClusterConfig, record: dict, say: Callable[[str], None]
) -> int:
    job_ids = submit_slurm_workers(folder, request.array, slurm, request.allow_shared_group)
    append_jsonl(folder.launches, {**record, "job_ids": job_ids})
    say(
        f"sweep folder: {folder.root}\nworkers:      {', '.join(job_ids)}\n"
        f"follow:       squeue -j {job_ids[0].split('_')[0]}; python -m jobs.sweep --run_dir {folder.root} --export"
    )
    if not request.wait:
        return 0
    wait_while_active(job_ids)
    return print_results(folder, say)


def run_one_worker(folder: SweepFolder, say: Callable[[str], None] = print) -> int:
    with StopSignals() as stop:
        report = run_worker(folder, WorkerIdentity.current(), stop)
    if report.interrupted:
        print(
            f"worker stopped by a signal; its trial is saved and released: run any worker on {folder.root} "
            "to resume it",
            file=sys.stderr,
        )
        return ExitCode.STOPPED
    return print_results(folder, say)


def print_results(folder: SweepFolder, say: Callable[[str], None] = print) -> int:
    """Refresh the exports and print the top 10; 0 when N trials are finished."""
    settings = folder.settings()
    with schedule_lock(folder):
        summary = export_results(folder, load_study(folder, settings.spec), settings)
    say(folder.top10.read_text())
    counts = ", ".join(f"{n} {state}" for state, n in summary.counts.items()) or "none"
    say(
        f"trials: {counts} ({summary.finished}/{settings.trials} finished)\n"
        f"table:  {folder.trials_csv}\n"
        + (
            f"best:   {folder.best_config} (trial {summary.best_number}, {summary.best_value:.4f})"
            if summary.best_number is not None
            else "best:   no COMPLETE trial yet"
        )
    )
    return ExitCode.OK if summary.finished >= settings.trials else ExitCode.FAILED


def job_name(folder: SweepFolder) -> str:
    return f"videns-sweep-{folder.root.name}"


def submit_slurm_workers(folder: SweepFolder, count: int, cfg: ClusterConfig, allow_shared_group: bool) -> list[str]:
    """One array of ``count`` worker tasks; returns their job ids (``<array>_<i>``)."""
    params = slurm_parameters(cfg, job_name(folder), guard=folder.root, allow_shared_group=allow_shared_group)
    executor = slurm_executor(folder.logs / LOG_PATTERN, cfg, params)
    jobs = executor.submit_array(
        [SweepWorkerTask(str(folder.root), i, cfg.cpus_per_task, allow_shared_group) for i in range(count)]
    )
    return [job.job_id for job in jobs]


def run_local_workers(
    folder: SweepFolder, count: int, cfg: ClusterConfig, say: Callable[[str], None], allow_shared_group: bool = False
) -> list[str]:
    """``count`` workers side by side through submitit's LocalExecutor; returns the ids of failed tasks."""
    threads = max(1, min(cfg.cpus_per_task, (os.cpu_count() or 1) // count))
    say(f"running {count} sweep worker(s) here with {threads} thread(s) each; logs in {folder.logs}")
    executor = local_executor(folder.logs / LOG_PATTERN, cfg)
    running = {}
    with sigint_ignored_in_children():
        for i in range(count):
            running[i] = executor.submit(SweepWorkerTask(str(folder.root), i, threads, allow_shared_group))
    try:
        while not all(job.done() for job in running.values()):
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        stop_local_jobs(running, say)
        raise
    failed = [job.job_id for job in running.values() if not task_succeeded(job)]
    for job_id in failed:
        say(f"worker task {job_id} FAILED; see {folder.logs / job_id}")
    return failed
