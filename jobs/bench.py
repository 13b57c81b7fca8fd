"""Measure speed and memory against a reference baseline: ``python -m jobs.bench [--quick] --out FILE.json``.

Generates data shaped like the reference video features (D=1280, up to 73 frames; all-73
and a variable mix), runs the loader, training, checkpoint, ensemble, ECG (the heartbeat
models on their own beat-shaped data) and (with a GPU) CUDA sections on it, writes every
figure to FILE.json and prints the ratios as a table.

``--submit`` runs the same measurement as one SLURM job instead (site profile
and ``--slurm.*`` as for ``jobs.launch``), so it measures what a member gets:
a MIG slice and its share of cores. ``--wait`` waits for it and prints the table.
"""

import sys
from dataclasses import replace
from pathlib import Path

from jsonargparse import ActionYesNo, ArgumentParser

from slurm.cluster import ClusterConfig, choose_cluster, cluster_config
from slurm.single_job import (
    DECIDING_SUBMIT,
    SUBMIT_OPTIONS,
    LoggedCall,
    add_submit_options,
    submit_defaults,
    submit_single,
)
from videns.bench.report import format_table
from videns.bench.run import SECTIONS, BenchConfig, run_bench
from videns.cli import parse_with_resolved_defaults, strict_parser
from videns.errors import user_errors_as_one_line
from videns.folders import bench_logs
from videns.logs import setup_logging

PROG = "jobs.bench"


def build_parser() -> ArgumentParser:
    parser = strict_parser(prog=PROG, description=BenchConfig.__doc__.splitlines()[0])
    parser.add_class_arguments(BenchConfig, as_positional=False, skip={"quick", "tiny", "sections"})
    parser.add_argument(
        "--quick",
        action=ActionYesNo,
        default=False,
        help="The quick profile (about 3 minutes on 2 CPU cores) instead of the full one.",
    )
    parser.add_argument(
        "--tiny",
        action=ActionYesNo,
        default=False,
        help="The tiny profile, for tests: seconds, and figures that mean nothing.",
    )
    parser.add_argument(
        "--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="Run only these sections."
    )
    add_submit_options(parser, "the bench")
    return parser


def main(args: list[str] | None = None) -> int:
    args = sys.argv[1:] if args is None else args
    with user_errors_as_one_line(PROG):
        ns = parse_with_resolved_defaults(build_parser(), args, DECIDING_SUBMIT, submit_defaults)
        opts = ns.as_dict()
        cfg = BenchConfig(**{k: v for k, v in opts.items() if k not in SUBMIT_OPTIONS})
        if opts["submit"]:
            slurm = cluster_config(ns)
            choose_cluster("slurm")  # one clear line when there is no SLURM here
    setup_logging()
    if opts["submit"]:
        return submit(cfg, slurm, wait=opts["wait"])
    return run_here(cfg)


def run_here(cfg: BenchConfig) -> int:
    with user_errors_as_one_line(PROG):
        result = run_bench(cfg)
    print(format_table(result), end="")
    print(
        f"{cfg.profile.name} profile, {result['host']['device']} ({result['host']['cpu_model']}), "
        f"{result['host']['torch_threads']} threads, {result['total_s']:.0f}s; results: {cfg.out}"
    )
    return 0


def submit(cfg: BenchConfig, slurm: ClusterConfig, wait: bool) -> int:
    # Absolute paths, since the job may start elsewhere, and the job's cores as torch threads.
    cfg = replace(
        cfg,
        out=cfg.out.resolve(),
        work_dir=Path(cfg.work_dir).resolve() if cfg.work_dir else None,
        threads=cfg.threads or slurm.cpus_per_task,
    )
    print(f"results: {cfg.out}")
    return submit_single(LoggedCall(run_here, cfg), slurm, "videns-bench", bench_logs(cfg.out), wait)


if __name__ == "__main__":
    sys.exit(main())
