"""Hyperparameter sweep: K workers (SLURM array tasks, or here) train the trials of one optuna study.

    python -m jobs.sweep --config configs/sweep_ecg.yaml --search cnn1d_gru --trials 40 --array 4
                         --run_dir results/sweep_gru [member overrides: --data.root data/ecg ...]
    python -m jobs.sweep --run_dir RUN [--trials N] [--array K]   continue (or extend) a sweep
    python -m jobs.sweep --run_dir RUN --worker                   add one worker, in this process
    python -m jobs.sweep --run_dir RUN --export                   refresh trials.csv & co., print the top 10

Each trial trains as a member in RUN/trials/trial_<n>/; a stopped or killed worker's
trial is resumed from its checkpoint by the next worker. Results: RUN/trials.csv,
RUN/trials_top10.md and RUN/best_config.yaml (for jobs.train or jobs.launch).
"""

import sys
from pathlib import Path

from jsonargparse import ActionYesNo, ArgumentParser

from slurm.cluster import Cluster, add_cluster_arguments, cluster_config
from slurm.sweep import run_sweep
from slurm.sweep_request import parse_request
from videns.cli import strict_parser
from videns.config import add_member_arguments
from videns.errors import user_errors_as_one_line
from videns.folders import use_private_umask
from videns.logs import setup_logging
from videns.sweep.spec import Objective, PrunerName, SamplerName

PROG = "jobs.sweep"
MEMBER_HEADING = "Member options for every trial, as for jobs.train (on top of the sweep file's recipe)"


def build_parser() -> ArgumentParser:
    # print_config=None: --print_config is ours (the search, as a sweep file), not jsonargparse's
    parser = strict_parser(prog=PROG, print_config=None, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config",
        type=Path | None,
        default=None,
        help="Sweep file (recipe + space, or searches); see configs/sweep_ecg.yaml.",
    )
    parser.add_argument("--search", type=str | None, default=None, help="Which of the file's searches to run.")
    parser.add_argument("--trials", type=int | None, default=None, help="N: the sweep ends when N trials are finished.")
    parser.add_argument("--array", type=int, default=1, help="K: workers (array tasks) running trials side by side.")
    parser.add_argument("--run_dir", type=Path, required=True, help="Sweep folder; an existing one is continued.")
    parser.add_argument(
        "--cluster", type=Cluster, default="auto", help="slurm, local, or auto: slurm when its controller answers."
    )
    parser.add_argument("--sampler", type=SamplerName | None, default=None, help="Overrides the sweep file.")
    parser.add_argument("--pruner", type=PrunerName | None, default=None, help="Overrides the sweep file.")
    parser.add_argument("--objective", type=Objective | None, default=None, help="Overrides the sweep file.")
    parser.add_argument(
        "--dry_run", action=ActionYesNo, default=False, help="Check everything, print the sbatch script; write nothing."
    )
    parser.add_argument(
        "--print_config",
        action=ActionYesNo,
        default=False,
        help="Print the search this command would run (the folder's, or --config's with the "
        "overrides above) as a sweep file for --config; write nothing.",
    )
    parser.add_argument(
        "--wait", action=ActionYesNo, default=False, help="On SLURM, wait for the workers and print the top 10."
    )
    parser.add_argument(
        "--worker", action=ActionYesNo, default=False, help="Run one worker in this process, then exit."
    )
    parser.add_argument(
        "--export", action=ActionYesNo, default=False, help="Only rewrite trials.csv, the top 10 and best_config.yaml."
    )
    add_cluster_arguments(parser)
    add_member_arguments(parser, config=False, out_dir=False, title=MEMBER_HEADING)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    use_private_umask()
    setup_logging()
    with user_errors_as_one_line(PROG):
        request, ns = parse_request(build_parser(), argv, PROG)
        return run_sweep(request, cluster_config(ns))


if __name__ == "__main__":
    sys.exit(main())
