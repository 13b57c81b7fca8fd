"""Apply a run's ensemble to a features file: ``python -m jobs.predict --run_dir RUN --input FILE.h5 --out FILE.csv``,
or a library ensemble (jobs.ensemble_eval --library): ``--ensemble_dir DIR`` instead of ``--run_dir``.

Options: ``--tta`` / ``--no_tta`` (default: as the run's ensemble job did),
``--combine mean|mean_unflagged|greedy`` (default: the one it chose),
``--overwrite``. Writes one CSV row per item (class names, probabilities,
uncertainty) and, when the file has labels, FILE.metrics.json. Every bad input
is one line and exit code 2, with nothing written. ``--submit`` runs it as one
SLURM job after the same checks (``--site`` and ``--slurm.*`` as for jobs.launch).
"""

import logging
import sys
from dataclasses import replace

from jsonargparse import ActionYesNo, ArgumentParser

from slurm.cluster import choose_cluster, cluster_config
from slurm.single_job import (
    DECIDING_SUBMIT,
    SUBMIT_OPTIONS,
    LoggedCall,
    add_submit_options,
    submit_defaults,
    submit_single,
)
from videns.cli import parse_with_resolved_defaults, strict_parser
from videns.ensemble.combine import COMBINATIONS
from videns.ensemble.predict_file import PredictConfig, apply_ensemble, check_prediction, format_summary
from videns.errors import user_errors_as_one_line
from videns.folders import predict_logs

PROG = "jobs.predict"


def build_parser() -> ArgumentParser:
    parser = strict_parser(prog=PROG, description=PredictConfig.__doc__.splitlines()[0])
    parser.add_class_arguments(PredictConfig, as_positional=False, skip={"tta", "overwrite", "combine", "mondrian"})
    # Written out so the command line reads `--tta` and `--overwrite`, not `--tta true`.
    parser.add_argument(
        "--tta",
        action=ActionYesNo,
        default=None,
        help="Average each member over the test-time views (default: as the run's ensemble job did).",
    )
    parser.add_argument(
        "--combine",
        choices=COMBINATIONS,
        default=None,
        help="Combination to apply, with its own weights and temperature (default: the run's choice).",
    )
    parser.add_argument(
        "--mondrian",
        action=ActionYesNo,
        default=None,
        help="Calibrate the prediction sets per class (default: as the run's ensemble job did).",
    )
    parser.add_argument(
        "--overwrite", action=ActionYesNo, default=False, help="Replace an existing output instead of refusing."
    )
    add_submit_options(parser, "the prediction")
    return parser


def predict_here(cfg: PredictConfig) -> int:
    print(format_summary(apply_ensemble(cfg)), end="")
    return 0


def main(args: list[str] | None = None) -> int:
    args = sys.argv[1:] if args is None else args
    with user_errors_as_one_line(PROG):
        ns = parse_with_resolved_defaults(build_parser(), args, DECIDING_SUBMIT, submit_defaults)
        opts = ns.as_dict()
        cfg = PredictConfig(**{k: v for k, v in opts.items() if k not in SUBMIT_OPTIONS})
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        if not opts["submit"]:
            return predict_here(cfg)
        slurm = cluster_config(ns)
        choose_cluster("slurm")  # one clear line when there is no SLURM here
        check_prediction(cfg)  # every input problem on this node, before the job waits in the queue
    cfg = replace(
        cfg,
        run_dir=cfg.run_dir and cfg.run_dir.resolve(),
        ensemble_dir=cfg.ensemble_dir and cfg.ensemble_dir.resolve(),
        input=cfg.input.resolve(),
        out=cfg.out.resolve(),
        progress="off",
    )
    return submit_single(LoggedCall(predict_here, cfg), slurm, "videns-predict", predict_logs(cfg.out), opts["wait"])


if __name__ == "__main__":
    sys.exit(main())
