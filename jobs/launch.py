"""Train an ensemble, one SLURM array task per seed, then evaluate it in a dependent job.

    python -m jobs.launch --array 4 [--config configs/ensemble.yaml] [--cluster auto|slurm|local]
                          [--run_dir results/<config name>] [--site NAME] [--slurm.KEY VALUE ...]
                          [--dry_run] [--wait] [--force] [member overrides: --trainer.max_epochs 20 ...]

Member i trains seed ``--seed + i`` (base 42) into RUN/members/seed_<seed>/. Running
the same command again continues the run: finished members take no queue slot,
unfinished ones resume from their last checkpoint; a larger ``--array`` adds seeds.
``--cluster auto`` uses SLURM when its controller answers, otherwise runs the
same tasks here and waits.
"""

import sys

from slurm.launch import launch
from slurm.launch_plan import build_launch_parser as build_parser  # noqa: F401  (the CLI reference reads it)
from slurm.launch_plan import plan_launch
from videns.errors import user_errors_as_one_line
from videns.folders import use_private_umask
from videns.logs import setup_logging

PROG = "jobs.launch"


def main(args: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if args is None else args)
    use_private_umask()
    setup_logging()
    with user_errors_as_one_line(PROG):
        plan = plan_launch(args)  # locks the run folder; every check happens here, before anything is written
        try:
            return launch(plan, args)
        finally:
            if plan.lock is not None:
                plan.lock.release()


if __name__ == "__main__":
    sys.exit(main())
