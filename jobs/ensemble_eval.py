"""Evaluate a run's ensemble: ``python -m jobs.ensemble_eval --run_dir RUN [--tta] [--members 1 2] [--combine greedy]
[--coverage 0.9] [--mondrian]``, or select one from a library of runs and sweeps:
``python -m jobs.ensemble_eval --library RUN_A RUN_B SWEEP [--max_members 5] [--out_dir DIR]``.

Runs every member over validation and test; validation flags collapsed
members, sets the combination's weights and fits its temperature, test scores
them. Writes RUN/ensemble/ (report.json, report.md, predictions.npz and .csv,
the plots and the merged resources.json) and prints a summary table. Missing or
unfinished members are skipped and listed; with no usable member it still
writes a report saying so and exits 2.

With ``--library``, the pool is every done member of each run and every
COMPLETE trial of each sweep, all trained on the same split files (else one
line naming the odd one out, and nothing is written); Caruana forward selection
on validation NLL picks the ensemble, and the report compares it on test with
the best single candidate and a seed ensemble of that candidate's config. It is
written to --out_dir (default: FIRST_DIR/library_ensemble/), the same files as
a run's; ``python -m jobs.predict --ensemble_dir DIR`` applies it.
"""

import sys

from jsonargparse import ActionYesNo, ArgumentParser

from videns.cli import parse_strictly, strict_parser
from videns.ensemble.evaluate import EnsembleEvalConfig, evaluate_and_summarize
from videns.errors import user_errors_as_one_line

PROG = "jobs.ensemble_eval"


def build_parser() -> ArgumentParser:
    parser = strict_parser(prog=PROG, description=EnsembleEvalConfig.__doc__.splitlines()[0])
    parser.add_class_arguments(EnsembleEvalConfig, as_positional=False, skip={"members", "tta", "mondrian", "library"})
    # Written out so the command line reads `--tta` and `--members 1 2`, not `--tta true` and `--members [1,2]`.
    parser.add_argument(
        "--tta",
        action=ActionYesNo,
        default=False,
        help="Average each member over the views none/reverse/speed_up/speed_down first.",
    )
    parser.add_argument(
        "--mondrian",
        action=ActionYesNo,
        default=False,
        help="Calibrate the prediction sets per class (class-conditional coverage).",
    )
    parser.add_argument(
        "--members",
        type=int,
        nargs="+",
        default=None,
        help="Evaluate only these seeds (default: every member of the run).",
    )
    parser.add_argument(
        "--library",
        type=str,
        nargs="+",
        default=None,
        help="Instead of --run_dir: run and sweep folders whose finished models form the pool a "
        "library ensemble is selected from (written to --out_dir, default "
        "FIRST_DIR/library_ensemble/).",
    )
    return parser


def main(args: list[str] | None = None) -> int:
    with user_errors_as_one_line(PROG):
        cfg = EnsembleEvalConfig(**parse_strictly(build_parser(), sys.argv[1:] if args is None else args).as_dict())
        evaluate_and_summarize(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
