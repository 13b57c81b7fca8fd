"""Where a run stands: ``python -m jobs.status --run_dir RUN``.

One line per member (state, epoch, best val accuracy, restarts, job id) and the
ensemble job's state; exit 0 when all is done, 1 when anything failed, else 3.
"""

import sys
from pathlib import Path

from jsonargparse import ArgumentParser

from slurm.status import print_status
from videns.cli import parse_strictly, strict_parser
from videns.errors import user_errors_as_one_line
from videns.folders import RunFolder

PROG = "jobs.status"


def build_parser() -> ArgumentParser:
    parser = strict_parser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", type=Path, required=True, help="The run folder that jobs.launch wrote.")
    return parser


def main(args: list[str] | None = None) -> int:
    with user_errors_as_one_line(PROG):
        return print_status(RunFolder(parse_strictly(build_parser(), sys.argv[1:] if args is None else args).run_dir))


if __name__ == "__main__":
    sys.exit(main())
