"""Train one member: ``python -m jobs.train --config FILE [--seed N] --out_dir DIR``.

Run again with the same arguments to continue after a stop; a finished member
returns at once. SIGTERM or SIGUSR2 save at the next step boundary and exit 143.
"""

import signal
import sys

from jobs._cli import user_errors_as_one_line
from videns.config import parse_member_config
from videns.logs import setup_logging
from videns.training.interrupt import StopSignals
from videns.training.member import train_member

INTERRUPTED_EXIT = 128 + signal.SIGTERM


def main(args: list[str] | None = None) -> int:
    with user_errors_as_one_line("jobs.train"):
        cfg = parse_member_config(args)
        setup_logging(cfg.out_dir / "train.log")
        with StopSignals() as stop:
            outcome = train_member(cfg, stop)
    if outcome.status == "interrupted":
        print(f"interrupted at epoch {outcome.epoch + 1}; checkpoint saved in {cfg.out_dir}; "
              "run the same command to resume", file=sys.stderr)
        return INTERRUPTED_EXIT
    print(f"seed {cfg.seed}: best val accuracy {outcome.best_val_accuracy:.4f} at epoch {outcome.best_epoch} "
          f"({outcome.stop_reason}); best model in {cfg.out_dir / 'best'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
