"""Measure speed and memory against a reference baseline: ``python -m jobs.bench [--quick] --out FILE.json``.

Generates seed-like data (D=1280, up to 73 frames; all-73 and a variable mix),
runs the loader, training, checkpoint, ensemble, seed-004 ECG (its own beat-shaped
data) and (with a GPU) CUDA sections on it, writes every figure to FILE.json and prints the ratios as a table.

``--submit`` runs the same measurement as one SLURM job instead (site profile
and ``--slurm.*`` as for ``jobs.launch``), so it measures what a member gets:
a MIG slice and its share of cores. ``--wait`` waits for it and prints the table.
"""

import sys
from dataclasses import replace
from pathlib import Path

from jsonargparse import ActionYesNo, ArgumentParser

from jobs._cli import user_errors_as_one_line
from jobs._cluster import (LOG_PATTERN, ClusterConfig, choose_cluster, cluster_config_from_args, slurm_executor,
                           slurm_parameters, split_slurm_args)
from jobs._queue import wait_while_active
from jobs._tasks import outcome_recorded, task_succeeded
from videns.bench.report import format_table
from videns.bench.run import SECTIONS, BenchConfig, run_bench
from videns.logs import setup_logging

PROG = "jobs.bench"
SUBMIT_OPTIONS = ("submit", "wait", "site")
WAIT_POLL_S = 2.0


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=BenchConfig.__doc__.splitlines()[0],
                            epilog="With --submit, --slurm.KEY VALUE overrides the site profile (as in jobs.launch).")
    parser.add_class_arguments(BenchConfig, as_positional=False, skip={"quick", "tiny", "sections"})
    parser.add_argument("--quick", action=ActionYesNo, default=False,
                        help="The quick profile (about 3 minutes on 2 CPU cores) instead of the full one.")
    parser.add_argument("--tiny", action=ActionYesNo, default=False,
                        help="The tiny profile, for tests: seconds, and figures that mean nothing.")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="Run only these sections.")
    parser.add_argument("--submit", action=ActionYesNo, default=False,
                        help="Run as one SLURM job (a member's slice and cores) instead of here.")
    parser.add_argument("--wait", action=ActionYesNo, default=False,
                        help="With --submit: wait for the job, then print its table.")
    parser.add_argument("--site", default=None,
                        help="With --submit: site profile, slurm/sites/<NAME>.yaml or a path (default $VIDENS_SITE).")
    return parser


def main(args: list[str] | None = None) -> int:
    slurm_args, bench_args = split_slurm_args(list(sys.argv[1:] if args is None else args))
    with user_errors_as_one_line(PROG):
        opts = build_parser().parse_args(bench_args).as_dict()
        cfg = BenchConfig(**{k: v for k, v in opts.items() if k not in SUBMIT_OPTIONS})
        if opts["submit"]:
            slurm = cluster_config_from_args(opts["site"], slurm_args, PROG)
            choose_cluster("slurm")  # one clear line when there is no SLURM here
    setup_logging()
    if opts["submit"]:
        return submit(cfg, slurm, wait=opts["wait"])
    return run_here(cfg)


def run_here(cfg: BenchConfig) -> int:
    with user_errors_as_one_line(PROG):
        result = run_bench(cfg)
    print(format_table(result), end="")
    print(f"{cfg.profile.name} profile, {result['host']['device']}, {result['host']['torch_threads']} threads, "
          f"{result['total_s']:.0f}s; results: {cfg.out}")
    return 0


class BenchTask:
    """The bench in a SLURM job; how it ended goes to JSON beside submitit's files, read back by --wait."""

    def __init__(self, cfg: BenchConfig):
        self.cfg = cfg

    def __call__(self) -> int:
        with outcome_recorded():
            setup_logging()
            return run_here(self.cfg)


def submit(cfg: BenchConfig, slurm: ClusterConfig, wait: bool) -> int:
    # Absolute paths, since the job may start elsewhere, and the job's cores as torch threads.
    cfg = replace(cfg, out=cfg.out.resolve(), work_dir=Path(cfg.work_dir).resolve() if cfg.work_dir else None,
                  threads=cfg.threads or slurm.cpus_per_task)
    params = slurm_parameters(slurm, "videns-bench")
    params["additional_parameters"].pop("requeue", None)  # a bench cut short is rerun, not continued
    logs = cfg.out.parent / "bench-logs"
    job = slurm_executor(logs / LOG_PATTERN, slurm, params).submit(BenchTask(cfg))
    print(f"bench job {job.job_id} submitted; results: {cfg.out}; log: {logs / job.job_id}")
    if not wait:
        return 0
    wait_while_active([job.job_id], poll_s=WAIT_POLL_S)
    print(job.stdout() or "", end="")
    return 0 if task_succeeded(job) else 1


if __name__ == "__main__":
    sys.exit(main())
