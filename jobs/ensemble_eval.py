"""Evaluate a run's ensemble: ``python -m jobs.ensemble_eval --run_dir RUN [--tta] [--members 1 2] [--combine greedy]
[--coverage 0.9] [--mondrian]``.

Runs every member over validation and test; validation flags collapsed
members, sets the combination's weights and fits its temperature, test scores
them. Writes RUN/ensemble/ (report.json, report.md, predictions.npz and .csv,
the plots and the merged resources.json) and prints a summary table. Missing or
unfinished members are skipped and listed; with no usable member it still
writes a report saying so and exits 2.
"""

import sys

from jsonargparse import ActionYesNo, ArgumentParser

from videns.ensemble.evaluate import EnsembleEvalConfig, evaluate_and_summarize
from videns.cli import parse_strictly, strict_parser
from videns.errors import user_errors_as_one_line

PROG = "jobs.ensemble_eval"


def build_parser() -> ArgumentParser:
    parser = strict_parser(prog=PROG, description=EnsembleEvalConfig.__doc__.splitlines()[0])
    parser.add_class_arguments(EnsembleEvalConfig, as_positional=False, skip={"members", "tta", "mondrian"})
    # Written out so the command line reads `--tta` and `--members 1 2`, not `--tta true` and `--members [1,2]`.
    parser.add_argument("--tta", action=ActionYesNo, default=False,
                        help="Average each member over the views none/reverse/speed_up/speed_down first.")
    parser.add_argument("--mondrian", action=ActionYesNo, default=False,
                        help="Calibrate the prediction sets per class (class-conditional coverage).")
    parser.add_argument("--members", type=int, nargs="+", default=None,
                        help="Evaluate only these seeds (default: every member of the run).")
    return parser


def main(args: list[str] | None = None) -> int:
    with user_errors_as_one_line(PROG):
        cfg = EnsembleEvalConfig(**parse_strictly(build_parser(), sys.argv[1:] if args is None else args).as_dict())
        evaluate_and_summarize(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
