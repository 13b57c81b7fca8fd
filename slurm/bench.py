"""The bench as one SLURM job, so it measures what a member gets: a slice and its share of cores."""

from dataclasses import replace
from pathlib import Path
from typing import Callable

from slurm.cluster import LOG_PATTERN, ClusterConfig, slurm_executor, slurm_parameters
from slurm.queue import wait_while_active
from slurm.tasks import outcome_recorded, task_succeeded
from videns.bench.run import BenchConfig
from videns.folders import bench_logs

WAIT_POLL_S = 2.0


class BenchTask:
    """Run ``run_here(cfg)`` in the job; how it ended goes to JSON beside submitit's files, read back by --wait."""

    def __init__(self, cfg: BenchConfig, run_here: Callable[[BenchConfig], int]):
        self.cfg = cfg
        self.run_here = run_here

    def __call__(self) -> int:
        from videns.logs import setup_logging

        with outcome_recorded():
            setup_logging()
            return self.run_here(self.cfg)


def submit_bench(cfg: BenchConfig, slurm: ClusterConfig, wait: bool, run_here: Callable[[BenchConfig], int]) -> int:
    # Absolute paths, since the job may start elsewhere, and the job's cores as torch threads.
    cfg = replace(cfg, out=cfg.out.resolve(), work_dir=Path(cfg.work_dir).resolve() if cfg.work_dir else None,
                  threads=cfg.threads or slurm.cpus_per_task)
    params = slurm_parameters(slurm, "videns-bench")
    params["additional_parameters"].pop("requeue", None)  # a bench cut short is rerun, not continued
    logs = bench_logs(cfg.out)
    job = slurm_executor(logs / LOG_PATTERN, slurm, params).submit(BenchTask(cfg, run_here))
    print(f"bench job {job.job_id} submitted; results: {cfg.out}; log: {logs / job.job_id}")
    if not wait:
        return 0
    wait_while_active([job.job_id], poll_s=WAIT_POLL_S)
    print(job.stdout() or "", end="")
    return 0 if task_succeeded(job) else 1
