"""Apply a run's ensemble to a features file: ``python -m jobs.predict --run_dir RUN --input FILE.h5 --out FILE.csv``.

Options: ``--tta`` / ``--no_tta`` (default: as the run's ensemble job did),
``--combine mean|mean_unflagged|greedy`` (default: the one it chose),
``--overwrite``. Writes one CSV row per item (class names, probabilities,
uncertainty) and, when the file has labels, FILE.metrics.json. Runs here;
every bad input is one line and exit code 2, with nothing written.
"""

import logging
import sys

from jsonargparse import ActionYesNo, ArgumentParser

from videns.ensemble.apply import PredictConfig, apply_ensemble, format_summary
from videns.ensemble.combine import COMBINATIONS
from videns.errors import user_errors_as_one_line

PROG = "jobs.predict"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=PredictConfig.__doc__.splitlines()[0])
    parser.add_class_arguments(PredictConfig, as_positional=False, skip={"tta", "overwrite", "combine"})
    # Written out so the command line reads `--tta` and `--overwrite`, not `--tta true`.
    parser.add_argument("--tta", action=ActionYesNo, default=None,
                        help="Average each member over the test-time views (default: as the run's ensemble job did).")
    parser.add_argument("--combine", choices=COMBINATIONS, default=None,
                        help="Combination to apply, with its own weights and temperature (default: the run's choice).")
    parser.add_argument("--overwrite", action=ActionYesNo, default=False,
                        help="Replace an existing output instead of refusing.")
    return parser


def main(args: list[str] | None = None) -> int:
    parser = build_parser()
    with user_errors_as_one_line(PROG):
        ns = parser.parse_args(args)
        cfg = PredictConfig(**ns.as_dict())
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        summary = apply_ensemble(cfg)
    print(format_summary(summary), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
