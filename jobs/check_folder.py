"""Refuse a run or sweep folder that others could write into: ``python -m jobs.check_folder --folder DIR``.

Each SLURM task runs this before submitit unpickles its job files: a folder that
another user owns, or that its group or the world may write into, could hold
code planted there. Exit 2 with one line naming the folder and the fix.
"""

import sys
from pathlib import Path

from jsonargparse import ActionYesNo, ArgumentParser

from videns.cli import parse_strictly, strict_parser
from videns.errors import user_errors_as_one_line
from videns.folders import check_private

PROG = "jobs.check_folder"


def build_parser() -> ArgumentParser:
    parser = strict_parser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True, help="The run or sweep folder.")
    parser.add_argument(
        "--allow_shared_group", action=ActionYesNo, default=False, help="Accept group-writable entries, with a warning."
    )
    return parser


def main(args: list[str] | None = None) -> int:
    with user_errors_as_one_line(PROG):
        opts = parse_strictly(build_parser(), sys.argv[1:] if args is None else args)
        check_private(opts.folder, opts.allow_shared_group)
    return 0


if __name__ == "__main__":
    sys.exit(main())
