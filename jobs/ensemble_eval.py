"""Evaluate a run's ensemble: ``python -m jobs.ensemble_eval --run_dir RUN [--tta] [--members 1 2] [--combine greedy]``.

Runs every member over validation and test; validation flags collapsed
members, sets the combination's weights and fits its temperature, test scores
them. Writes RUN/ensemble/{report.json,report.md,predictions.npz,predictions.csv,
reliability.png,confusion_matrix.png,training_curves.png,resources.json} and
prints a summary table. Missing or unfinished members are skipped and listed;
with no usable member it still writes a report saying so and exits 2.
"""

import sys

from jsonargparse import ActionYesNo, ArgumentParser

from jobs._cli import user_errors_as_one_line
from videns.ensemble.evaluate import EnsembleEvalConfig, evaluate_ensemble
from videns.ensemble.report import format_summary
from videns.logs import setup_logging

PROG = "jobs.ensemble_eval"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=EnsembleEvalConfig.__doc__.splitlines()[0])
    parser.add_class_arguments(EnsembleEvalConfig, as_positional=False, skip={"members", "tta"})
    # Written out so the command line reads `--tta` and `--members 1 2`, not `--tta true` and `--members [1,2]`.
    parser.add_argument("--tta", action=ActionYesNo, default=False,
                        help="Average each member over the views none/reverse/speed_up/speed_down first.")
    parser.add_argument("--members", type=int, nargs="+", default=None,
                        help="Evaluate only these seeds (default: every member of the run).")
    return parser


def main(args: list[str] | None = None) -> int:
    parser = build_parser()
    with user_errors_as_one_line(PROG):
        ns = parser.parse_args(args)
        cfg = EnsembleEvalConfig(**ns.as_dict())
        setup_logging(cfg.out_dir / "ensemble_eval.log")
        report = evaluate_ensemble(cfg)
    print(format_summary(report), end="")
    print(f"report: {cfg.out_dir / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
