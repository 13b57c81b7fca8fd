"""Check every CUDA path in one command: ``python -m jobs.gpu_check --out DIR`` (``make gpu-check OUT=DIR``).

Runs ``pytest -m cuda``, the bench's CUDA section, a bf16 demo member against an
fp32 one, a SIGTERM-and-resume against an uninterrupted member, four members at
once through the local executor, and a training step under CUDA's sync debug
mode. Without a GPU the CUDA-only parts are skipped with one line each and the
rest runs on the CPU. Writes DIR/gpu_check.json and DIR/summary.md; exits 1 when
a part failed.
"""

import sys
from pathlib import Path

from jsonargparse import ArgumentParser

from videns.cli import parse_strictly, strict_parser
from videns.errors import ExitCode, user_errors_as_one_line
from videns.folders import GpuCheckFolder
from videns.gpu_check.check import GpuCheckConfig, run_gpu_check
from videns.gpu_check.runner import Commands

PROG = "jobs.gpu_check"
REPO = Path(__file__).resolve().parents[1]


def commands() -> Commands:
    """This checkout's tests, entry points and demo config, run by this Python."""
    module = [sys.executable, "-m"]
    return Commands(
        pytest=[*module, "pytest", str(REPO / "tests")],
        train=[*module, "jobs.train"],
        launch=[*module, "jobs.launch"],
        demo_config=REPO / "configs" / "demo.yaml",
        cwd=REPO,
    )


def build_parser() -> ArgumentParser:
    parser = strict_parser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_class_arguments(GpuCheckConfig, as_positional=False)
    return parser


def main(args: list[str] | None = None) -> int:
    with user_errors_as_one_line(PROG):
        cfg = GpuCheckConfig(**parse_strictly(build_parser(), sys.argv[1:] if args is None else args).as_dict())
    record = run_gpu_check(cfg, commands())
    print(GpuCheckFolder(cfg.out).summary.read_text(), end="")
    return ExitCode.FAILED if any(part["status"] == "failed" for part in record["parts"].values()) else ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
