"""Measure speed and memory against a seed-style baseline: ``python -m jobs.bench [--quick] --out FILE.json``.

Generates seed-like data (D=1280, up to 73 frames; all-73 and a variable mix),
runs the loader, training, checkpoint, ensemble and (with a GPU) CUDA sections
on it, writes every figure to FILE.json and prints the ratios as a table.
"""

import sys

from jsonargparse import ActionYesNo, ArgumentParser

from jobs._cli import user_errors_as_one_line
from videns.bench.report import format_table
from videns.bench.run import SECTIONS, BenchConfig, run_bench
from videns.logs import setup_logging

PROG = "jobs.bench"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=BenchConfig.__doc__.splitlines()[0])
    parser.add_class_arguments(BenchConfig, as_positional=False, skip={"quick", "tiny", "sections"})
    parser.add_argument("--quick", action=ActionYesNo, default=False,
                        help="The quick profile (about 3 minutes on 2 CPU cores) instead of the full one.")
    parser.add_argument("--tiny", action=ActionYesNo, default=False,
                        help="The tiny profile, for tests: seconds, and figures that mean nothing.")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="Run only these sections.")
    return parser


def main(args: list[str] | None = None) -> int:
    parser = build_parser()
    with user_errors_as_one_line(PROG):
        cfg = BenchConfig(**parser.parse_args(args).as_dict())
        setup_logging()
        result = run_bench(cfg)
    print(format_table(result), end="")
    print(f"{cfg.profile.name} profile, {result['host']['device']}, {result['host']['torch_threads']} threads, "
          f"{result['total_s']:.0f}s; results: {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
