"""Hyperparameter sweep: K workers (SLURM array tasks, or here) train the trials of one optuna study.

    python -m jobs.sweep --config configs/sweep_ecg.yaml --search cnn1d_gru --trials 40 --array 4
                         --run_dir results/sweep_gru [--cluster auto|slurm|local] [--sampler tpe|random]
                         [--pruner median|halving|none] [--objective accuracy|balanced_accuracy]
                         [--site NAME] [--slurm.KEY VALUE ...] [--dry_run] [--wait]
                         [member overrides: --data.root data/ecg --trainer.max_epochs 20 ...]
    python -m jobs.sweep --run_dir RUN [--trials N] [--array K]   continue (or extend) a sweep
    python -m jobs.sweep --run_dir RUN --worker                   add one worker, in this process
    python -m jobs.sweep --run_dir RUN --export                   refresh trials.csv & co., print the top 10

Each trial trains as a member in RUN/trials/trial_<n>/; a stopped or killed worker's
trial is resumed from its checkpoint by the next worker. Results: RUN/trials.csv,
RUN/trials_top10.md and RUN/best_config.yaml (for jobs.train or jobs.launch).
"""

import argparse
import json
import shlex
import sys
from pathlib import Path

from jobs._cli import user_errors_as_one_line
from jobs._cluster import (LOG_PATTERN, LOGS_DIR, Cluster, choose_cluster, cluster_config_from_args, render_sbatch,
                           slurm_parameters, split_slurm_args)
from jobs._run import git_revision, now_iso
from jobs._tasks import INTERRUPTED_EXIT
from jobs._queue import wait_while_active
from jobs._sweep_tasks import job_name, run_local_workers, submit_slurm_workers
from videns.logs import setup_logging
from videns.sweep import SweepFolder, WorkerIdentity, export_results, load_study, run_worker
from videns.sweep.claims import schedule_lock
from videns.sweep.prepare import open_sweep
from videns.sweep.spec import Objective, PrunerName, SamplerName
from videns.training.interrupt import StopSignals

PROG = "jobs.sweep"
CTRL_C_EXIT = 130  # as a shell reports Ctrl-C
LAUNCHES_FILE = "launches.jsonl"


def parse_cli(argv: list[str]) -> tuple[argparse.Namespace, list[str], list[str]]:
    """(sweep options, member overrides, --slurm.* options)."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {PROG}", allow_abbrev=False, description=__doc__.split("\n\n")[0],
        epilog="Other options are member settings, as for jobs.train (--trainer.max_epochs 20, --slurm.* apart); "
               "they apply to every trial.")
    parser.add_argument("--config", type=Path,
                        help="sweep file (recipe + space, or searches); see configs/sweep_ecg.yaml")
    parser.add_argument("--search", help="which of the file's searches to run")
    parser.add_argument("--trials", type=int, help="N: the sweep ends when N trials are finished")
    parser.add_argument("--array", type=int, default=1, help="K: workers (array tasks) running trials side by side")
    parser.add_argument("--run_dir", type=Path, required=True, help="sweep folder; an existing one is continued")
    parser.add_argument("--cluster", choices=Cluster.__args__, default="auto")
    parser.add_argument("--sampler", choices=SamplerName.__args__, help="overrides the sweep file")
    parser.add_argument("--pruner", choices=PrunerName.__args__, help="overrides the sweep file")
    parser.add_argument("--objective", choices=Objective.__args__, help="overrides the sweep file")
    parser.add_argument("--site", help="SLURM site profile (slurm/sites/NAME.yaml or a path); default $VIDENS_SITE")
    parser.add_argument("--dry_run", action="store_true",
                        help="check everything, print the sbatch script; write nothing")
    parser.add_argument("--wait", action="store_true", help="on SLURM, wait for the workers and print the top 10")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--worker", action="store_true", help="run one worker in this process, then exit")
    mode.add_argument("--export", action="store_true", help="only rewrite trials.csv, the top 10 and best_config.yaml")
    opts, rest = parser.parse_known_args(argv)
    slurm_args, member_args = split_slurm_args(rest)
    if opts.array < 1:
        parser.error(f"--array must be >= 1, got {opts.array}")
    return opts, member_args, slurm_args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    setup_logging()
    opts, member_args, slurm_args = parse_cli(argv)
    folder = SweepFolder(opts.run_dir)
    with user_errors_as_one_line(PROG):
        slurm = cluster_config_from_args(opts.site, slurm_args, PROG)
        choices = {k: getattr(opts, k) for k in ("sampler", "pruner", "objective")}
        settings = open_sweep(folder, opts.config, opts.search, choices, member_args, opts.trials,
                              write=not (opts.dry_run or opts.export))
        if opts.worker or opts.export:
            cluster = "local"
        elif opts.dry_run and opts.cluster != "auto":
            cluster = opts.cluster  # a dry run for SLURM needs no sbatch here
        else:
            cluster = choose_cluster(opts.cluster)
    if opts.export:
        return print_results(folder)
    if opts.worker:
        return run_one_worker(folder)
    if opts.dry_run:
        print(f"# dry run: nothing written, nothing submitted. Sweep folder would be {folder.root}")
        print(f"# {opts.array} worker task(s) ({'here' if cluster == 'local' else 'SLURM array'}), "
              f"{settings.trials} trials of {len(settings.spec.space)} param(s)")
        print(render_sbatch(folder.root / LOGS_DIR / LOG_PATTERN, slurm_parameters(slurm, job_name(folder.root)),
                            opts.array if opts.array > 1 else None))
        return 0
    record = {"time": now_iso(), "cluster": cluster, "array": opts.array, "trials": settings.trials,
              "git_revision": git_revision(), "command": shlex.join(["python", "-m", PROG, *argv])}
    if cluster == "slurm":
        job_ids = submit_slurm_workers(folder.root, opts.array, slurm)
        _append_launch(folder, {**record, "job_ids": job_ids})
        print(f"sweep folder: {folder.root}\nworkers:      {', '.join(job_ids)}\n"
              f"follow:       squeue -j {job_ids[0].split('_')[0]}; python -m {PROG} --run_dir {folder.root} --export")
        if not opts.wait:
            return 0
        wait_while_active(job_ids)
        return print_results(folder)
    _append_launch(folder, record)
    try:
        failed = run_local_workers(folder.root, opts.array, slurm, say=print)
    except KeyboardInterrupt:
        print(f"stopped; running trials are saved and released: python -m {PROG} --run_dir {folder.root} "
              "continues the sweep", file=sys.stderr)
        return CTRL_C_EXIT
    code = print_results(folder)
    return 1 if failed and code == 0 else code


def run_one_worker(folder: SweepFolder) -> int:
    with StopSignals() as stop:
        report = run_worker(folder, WorkerIdentity.current(), stop)
    if report.interrupted:
        print(f"worker stopped by a signal; its trial is saved and released: run any worker on {folder.root} "
              "to resume it", file=sys.stderr)
        return INTERRUPTED_EXIT
    return print_results(folder)


def print_results(folder: SweepFolder) -> int:
    """Refresh the exports and print the top 10; 0 when N trials are finished."""
    settings = folder.settings()
    with schedule_lock(folder):
        summary = export_results(folder, load_study(folder, settings.spec), settings)
    print(folder.top10.read_text())
    counts = ", ".join(f"{n} {state}" for state, n in summary.counts.items()) or "none"
    print(f"trials: {counts} ({summary.finished}/{settings.trials} finished)\n"
          f"table:  {folder.trials_csv}\n"
          + (f"best:   {folder.best_config} (trial {summary.best_number}, {summary.best_value:.4f})"
             if summary.best_number is not None else "best:   no COMPLETE trial yet"))
    return 0 if summary.finished >= settings.trials else 1


def _append_launch(folder: SweepFolder, record: dict) -> None:
    with (folder.root / LAUNCHES_FILE).open("a") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    sys.exit(main())
