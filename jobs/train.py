"""Train one member: ``python -m jobs.train --config FILE [--seed N] --out_dir DIR``.

Run again with the same arguments to continue after a stop; a finished member
returns at once. SIGTERM or SIGUSR2 save at the next step boundary and exit 143.
"""

import sys

from jsonargparse import ArgumentParser

from videns.config import build_parser as build_member_parser
from videns.config import parse_member_config
from videns.errors import ExitCode, user_errors_as_one_line
from videns.folders import MemberFolder, use_private_umask
from videns.member.train import train_member_logged

PROG = "jobs.train"


def build_parser() -> ArgumentParser:
    return build_member_parser(prog=PROG)


def main(args: list[str] | None = None) -> int:
    use_private_umask()
    with user_errors_as_one_line(PROG):
        cfg = parse_member_config(args, build_parser())
        outcome = train_member_logged(cfg)
    if outcome.status == "interrupted":
        print(
            f"interrupted at epoch {outcome.epoch + 1}; checkpoint saved in {cfg.out_dir}; "
            "run the same command to resume",
            file=sys.stderr,
        )
        return ExitCode.STOPPED
    print(
        f"seed {cfg.seed}: best val accuracy {outcome.best_val_accuracy:.4f} at epoch {outcome.best_epoch} "
        f"({outcome.stop_reason}); best model in {MemberFolder(cfg.out_dir).best}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
