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

import shlex
import sys
from pathlib import Path

from jsonargparse import ActionYesNo, ArgumentParser

from slurm.cluster import Cluster, cluster_config_from_args, split_options, split_slurm_args
from slurm.sweep import SweepRequest, run_sweep
from videns.cli import parse_strictly, strict_parser
from videns.config import MEMBER_OPTION_PREFIXES
from videns.errors import ConfigError, user_errors_as_one_line
from videns.folders import use_private_umask
from videns.logs import setup_logging
from videns.sweep.spec import Objective, PrunerName, SamplerName

PROG = "jobs.sweep"


def build_parser() -> ArgumentParser:
    # print_config=None: --print_config is ours (the search, as a sweep file), not jsonargparse's
    parser = strict_parser(prog=PROG, print_config=None, description=__doc__.split("\n\n")[0],
                            epilog="Member settings (--data.*, --trainer.*, --model.*, ... as for jobs.train) apply "
                                   "to every trial; --slurm.KEY VALUE overrides the site profile.")
    parser.add_argument("--config", type=Path | None, default=None,
                        help="Sweep file (recipe + space, or searches); see configs/sweep_ecg.yaml.")
    parser.add_argument("--search", type=str | None, default=None, help="Which of the file's searches to run.")
    parser.add_argument("--trials", type=int | None, default=None, help="N: the sweep ends when N trials are finished.")
    parser.add_argument("--array", type=int, default=1, help="K: workers (array tasks) running trials side by side.")
    parser.add_argument("--run_dir", type=Path, required=True, help="Sweep folder; an existing one is continued.")
    parser.add_argument("--cluster", type=Cluster, default="auto",
                        help="slurm, local, or auto: slurm when its controller answers.")
    parser.add_argument("--sampler", type=SamplerName | None, default=None, help="Overrides the sweep file.")
    parser.add_argument("--pruner", type=PrunerName | None, default=None, help="Overrides the sweep file.")
    parser.add_argument("--objective", type=Objective | None, default=None, help="Overrides the sweep file.")
    parser.add_argument("--site", type=str | None, default=None,
                        help="SLURM site profile (slurm/sites/NAME.yaml or a path); default $VIDENS_SITE.")
    parser.add_argument("--dry_run", action=ActionYesNo, default=False,
                        help="Check everything, print the sbatch script; write nothing.")
    parser.add_argument("--print_config", action=ActionYesNo, default=False,
                        help="Print the search this command would run (the folder's, or --config's with the "
                             "overrides above) as a sweep file for --config; write nothing.")
    parser.add_argument("--wait", action=ActionYesNo, default=False,
                        help="On SLURM, wait for the workers and print the top 10.")
    parser.add_argument("--worker", action=ActionYesNo, default=False, help="Run one worker in this process, then exit.")
    parser.add_argument("--export", action=ActionYesNo, default=False,
                        help="Only rewrite trials.csv, the top 10 and best_config.yaml.")
    return parser


def parse_request(argv: list[str]) -> tuple[SweepRequest, list[str], str | None]:
    """(the request, --slurm.* options, --site)."""
    slurm_args, rest = split_slurm_args(argv)
    member_args, own = split_options(rest, MEMBER_OPTION_PREFIXES)
    opts = parse_strictly(build_parser(), own).as_dict()
    if opts["array"] < 1:
        raise ConfigError(f"--array must be >= 1, got {opts['array']}")
    worker, export, site = opts.pop("worker"), opts.pop("export"), opts.pop("site")
    if worker and export:
        raise ConfigError("--worker and --export exclude each other")
    mode = "worker" if worker else "export" if export else "sweep"
    request = SweepRequest(**opts, mode=mode, member_args=member_args,
                           command=shlex.join(["python", "-m", PROG, *argv]))
    return request, slurm_args, site


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    use_private_umask()
    setup_logging()
    with user_errors_as_one_line(PROG):
        request, slurm_args, site = parse_request(argv)
        slurm = cluster_config_from_args(site, slurm_args, PROG)
        return run_sweep(request, slurm)


if __name__ == "__main__":
    sys.exit(main())
