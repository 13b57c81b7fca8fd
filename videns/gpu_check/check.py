"""One command that checks every CUDA path, on a GPU when there is one and on the CPU otherwise.

The parts run in order, within one time budget. On a machine without CUDA the
parts that need it are skipped with one line each, and the rest run the same
commands a GPU run does, so the check cannot go stale between GPU loans.
"""

import logging
import os
import platform
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from videns.data.demo import write_demo_data
from videns.errors import ConfigError
from videns.folders import GpuCheckFolder
from videns.gpu_check.device_parts import bench, cuda_tests, sync_free_step
from videns.gpu_check.member_parts import demo_bf16, four_members, resume
from videns.gpu_check.runner import CheckContext, Commands, run_parts
from videns.gpu_check.summary import format_summary
from videns.io import write_json_atomically, write_text_atomically
from videns.logs import setup_logging

log = logging.getLogger(__name__)

SCHEMA = "videns.gpu_check/1"
PARTS = {
    "cuda_tests": cuda_tests,
    "sync_free_step": sync_free_step,
    "bench": bench,
    "demo_bf16": demo_bf16,
    "resume": resume,
    "four_members": four_members,
}
PartName = Literal["cuda_tests", "sync_free_step", "bench", "demo_bf16", "resume", "four_members"]


@dataclass
class GpuCheckConfig:
    """Check every CUDA path and write the results (JSON and summary.md) into one folder.

    Args:
        out: folder for gpu_check.json, summary.md, gpu_check.log, cuda-tests.xml and bench-cuda.json.
        work_dir: folder for the members and data it trains on (default: a temporary one, removed).
        budget_s: stop starting parts once this many seconds have passed; a running part is cut at it.
        parts: run only these parts, in this order.
    """

    out: Path
    work_dir: Path | None = None
    budget_s: float = 450.0
    parts: list[PartName] = field(default_factory=lambda: list(PARTS))

    def __post_init__(self):
        self.out = Path(self.out)
        if self.budget_s <= 0:
            raise ConfigError(f"budget_s must be > 0, got {self.budget_s}")
        unknown = sorted(set(self.parts) - set(PARTS))
        if unknown:
            raise ConfigError(f"parts {unknown} unknown; choose from {list(PARTS)}")


def run_gpu_check(cfg: GpuCheckConfig, commands: Commands) -> dict[str, Any]:
    """Run the parts; write ``gpu_check.json`` and ``summary.md``; return the record."""
    started = time.monotonic()
    folder = GpuCheckFolder(cfg.out)
    folder.root.mkdir(parents=True, exist_ok=True)
    setup_logging(folder.log)
    work = Path(cfg.work_dir) if cfg.work_dir else Path(tempfile.mkdtemp(prefix="videns-gpu-check-"))
    ctx = CheckContext(folder, work, commands, torch.cuda.is_available(), started + cfg.budget_s)
    log.info("gpu-check on %s into %s (budget %.0f s)", environment()["device"], folder.root, cfg.budget_s)
    try:
        write_demo_data(ctx.data_root)  # once, before members that would each write it
        results = run_parts([(name, PARTS[name]) for name in cfg.parts], ctx)
    finally:
        if cfg.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    record = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "environment": environment(),
        "budget_s": cfg.budget_s,
        "total_s": round(time.monotonic() - started, 1),
        "parts": results,
    }
    write_json_atomically(folder.result, record)
    write_text_atomically(folder.summary, format_summary(record))
    return record


def environment() -> dict[str, Any]:
    """The machine the figures belong to."""
    cuda = torch.cuda.is_available()
    env: dict[str, Any] = {
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": cuda,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu (no CUDA device visible)",
    }
    if cuda:
        props = torch.cuda.get_device_properties(0)
        env.update(
            capability=f"{props.major}.{props.minor}",
            total_memory_gb=props.total_memory / 1e9,
            cudnn=torch.backends.cudnn.version(),
            **nvidia_smi(),
        )
    return env


def nvidia_smi() -> dict[str, str]:
    """Driver version and MIG mode, as nvidia-smi reports them ({} where it is missing or fails)."""
    if shutil.which("nvidia-smi") is None:
        return {}
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version,mig.mode.current", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    fields = [f.strip() for f in out.splitlines()[0].split(",")] if out.strip() else []
    return dict(zip(("driver", "mig_mode"), fields))
