"""The sweep worker as a submitit task, and running K of them on SLURM or here.

A task holds only the run folder and its array index; the sweep's state is on disk
(journal, claim files, member checkpoints), so a requeued task simply starts a new
worker, which resumes the trial its predecessor released.

Signals, inside a worker task (as for jobs._tasks.MemberTask): SIGUSR2 or SIGTERM
stop the running trial at its next step boundary (checkpoint saved), the trial's
claim is released, then USR2 hands over to submitit's requeue, and SIGTERM under
SLURM waits to be killed so that SLURM requeues the preempted task.
"""

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

import submitit

from jobs._cluster import LOG_PATTERN, LOGS_DIR, ClusterConfig, local_executor, slurm_executor, slurm_parameters
from jobs._submit import sigint_ignored_in_children, stop_local_jobs
from jobs._tasks import hand_over, job_context, outcome_recorded, task_succeeded

log = logging.getLogger(__name__)
POLL_S = 1.0


class SweepWorkerTask:
    """Worker ``index`` of the sweep in ``run_dir``: take, train and tell trials until none is left."""

    def __init__(self, run_dir: str, index: int, threads: int | None = None):
        self.run_dir = str(run_dir)
        self.index = int(index)
        self.threads = threads

    def __call__(self) -> dict[str, Any]:
        with outcome_recorded():
            return self._work()

    def _work(self) -> dict[str, Any]:
        import torch

        from videns.logs import setup_logging
        from videns.sweep import SweepFolder, WorkerIdentity, run_worker
        from videns.training.interrupt import StopSignals

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
        return submitit.helpers.DelayedSubmission(SweepWorkerTask(self.run_dir, self.index, self.threads))

    def __repr__(self) -> str:
        return f"SweepWorkerTask(run_dir={self.run_dir!r}, index={self.index}, threads={self.threads})"


def job_name(run_dir: Path) -> str:
    return f"videns-sweep-{Path(run_dir).name}"


def submit_slurm_workers(run_dir: Path, count: int, cfg: ClusterConfig) -> list[str]:
    """One array of ``count`` worker tasks; returns their job ids (``<array>_<i>``)."""
    executor = slurm_executor(Path(run_dir) / LOGS_DIR / LOG_PATTERN, cfg, slurm_parameters(cfg, job_name(run_dir)))
    jobs = executor.submit_array([SweepWorkerTask(str(run_dir), i, cfg.cpus_per_task) for i in range(count)])
    return [job.job_id for job in jobs]


def run_local_workers(run_dir: Path, count: int, cfg: ClusterConfig, say: Callable[[str], None]) -> list[str]:
    """``count`` workers side by side through submitit's LocalExecutor; returns the ids of failed tasks."""
    threads = max(1, min(cfg.cpus_per_task, (os.cpu_count() or 1) // count))
    say(f"running {count} sweep worker(s) here with {threads} thread(s) each; logs in {Path(run_dir) / LOGS_DIR}")
    executor = local_executor(Path(run_dir) / LOGS_DIR / LOG_PATTERN, cfg)
    running = {}
    with sigint_ignored_in_children():
        for i in range(count):
            running[i] = executor.submit(SweepWorkerTask(str(run_dir), i, threads))
    try:
        while not all(job.done() for job in running.values()):
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        stop_local_jobs(running, say)
        raise
    failed = [job.job_id for job in running.values() if not task_succeeded(job)]
    for job_id in failed:
        say(f"worker task {job_id} FAILED; see {Path(run_dir) / LOGS_DIR / job_id}")
    return failed
