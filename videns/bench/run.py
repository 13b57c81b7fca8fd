"""One bench run: generate the data, run each section on it, collect the ratios, write JSON."""

import logging
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from videns.bench.checkpoint import measure_checkpoint
from videns.bench.cuda import measure_cuda
from videns.bench.data import FIXED, MIXED, prepare_data
from videns.bench.ecg import SHAPES, measure_ecg
from videns.bench.ensemble import measure_ensemble
from videns.bench.loader import measure_loader
from videns.bench.profiles import PROFILES, Profile
from videns.bench.report import collect_ratios
from videns.bench.training import compare_training, full_model_steps, training_step, unpacked_lstm_steps
from videns.device import resolve_device
from videns.errors import ConfigError
from videns.io import write_json_atomically

log = logging.getLogger(__name__)

SCHEMA = "videns.bench/1"
SECTIONS = ("loader", "training", "checkpoint", "ensemble", "ecg", "cuda")
Section = Literal["loader", "training", "checkpoint", "ensemble", "ecg", "cuda"]


@dataclass
class BenchConfig:
    """Measure speed and memory against a reference baseline, on generated data shaped like the reference features.

    Args:
        out: JSON file to write the results to.
        quick: the quick profile (about 3 minutes on 2 CPU cores) instead of the full one.
        tiny: the tiny profile, for tests: seconds, and figures that mean nothing.
        device: where training, steps and the ensemble run; auto picks cuda when available.
        work_dir: folder for the generated data and run outputs, kept and reused (default: a temporary one, removed).
        workers: DataLoader workers for every loader, ours and reference alike.
        threads: torch intra-op threads (0 leaves torch's default).
        bucket_window: our length bucketing window, in batches (data.bucket_window).
        sections: run only these sections.
    """

    out: Path
    quick: bool = False
    tiny: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    work_dir: Path | None = None
    workers: int = 0
    threads: int = 0
    bucket_window: int = 8
    sections: list[Section] = field(default_factory=lambda: list(SECTIONS))

    def __post_init__(self):
        self.out = Path(self.out)
        problems = []
        if self.quick and self.tiny:
            problems.append("choose one of --quick and --tiny")
        if self.workers < 0 or self.threads < 0 or self.bucket_window < 0:
            problems.append("workers, threads and bucket_window must be >= 0")
        unknown = sorted(set(self.sections) - set(SECTIONS))
        if unknown:
            problems.append(f"sections {unknown} unknown; choose from {list(SECTIONS)}")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def profile(self) -> Profile:
        return PROFILES["tiny" if self.tiny else "quick" if self.quick else "full"]


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Run every selected section on the same data; write ``cfg.out`` and return the result."""
    device = resolve_device(cfg.device)  # where it runs: a submitted bench is checked on its node
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    temporary = cfg.work_dir is None
    work_dir = Path(tempfile.mkdtemp(prefix="videns-bench-")) if temporary else Path(cfg.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {**asdict(cfg), "out": str(cfg.out), "work_dir": str(cfg.work_dir)},
        "profile": asdict(cfg.profile),
        "host": host_info(device),
    }
    try:
        _run_sections(cfg, device, work_dir, result)
    finally:
        if temporary:
            shutil.rmtree(work_dir, ignore_errors=True)
    result["host"]["load_average_end"] = os.getloadavg()
    result["ratios"] = collect_ratios(result)
    result["total_s"] = time.perf_counter() - started
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(cfg.out, result)
    return result


def _run_sections(cfg: BenchConfig, device: torch.device, work_dir: Path, result: dict[str, Any]) -> None:
    profile, wanted = cfg.profile, set(cfg.sections)
    seconds = result.setdefault("section_seconds", {})
    clock = time.perf_counter()
    data = prepare_data(profile, work_dir)
    result["data"] = {name: d.describe() for name, d in data.items()}
    seconds["data"], clock = time.perf_counter() - clock, time.perf_counter()
    if "loader" in wanted:
        result["loader"] = {
            name: measure_loader(d, profile.batch_size, cfg.workers, cfg.bucket_window, profile.loader_repeats)
            for name, d in data.items()
        }
        seconds["loader"], clock = time.perf_counter() - clock, time.perf_counter()
    if "training" in wanted:
        result["training"] = {
            name: compare_training(
                d,
                profile,
                model_args=profile.train_model,
                num_workers=cfg.workers,
                device=device,
                work_dir=work_dir / "training",
                bucket_window=cfg.bucket_window,
            )
            for name, d in data.items()
        }
        if "loader" in result:
            for name in data:
                result["training"][name]["input_bound"] = input_bound(
                    result["loader"][name], result["training"][name], data[name].num_items("val")
                )
        result["training"]["unpacked_lstm"] = unpacked_lstm_steps(profile, device)
        result["training"]["full_model_steps"] = full_model_steps(profile, device)
        seconds["training"], clock = time.perf_counter() - clock, time.perf_counter()
    if "checkpoint" in wanted:
        result["checkpoint"] = measure_checkpoint(profile, work_dir, training_step(profile, device), device)
        seconds["checkpoint"], clock = time.perf_counter() - clock, time.perf_counter()
    if "ensemble" in wanted:
        model_args = profile.full_model if device.type == "cuda" else profile.train_model
        result["ensemble"] = measure_ensemble(
            data[MIXED],
            model_args,
            batch_size=profile.eval_batch_size,
            num_workers=cfg.workers,
            device=device,
            work_dir=work_dir,
        )
        seconds["ensemble"], clock = time.perf_counter() - clock, time.perf_counter()
    if "ecg" in wanted:
        for shape in SHAPES:  # "ecg" (MIT-BIH's beats), "ecg_long" (a public set's 427-step series)
            result[shape] = measure_ecg(shape, profile.name, work_dir, device, cfg.workers)
        seconds["ecg"], clock = time.perf_counter() - clock, time.perf_counter()
    if "cuda" not in wanted:
        result["cuda"] = {"available": torch.cuda.is_available(), "note": "section not selected"}
    elif device.type != "cuda":
        result["cuda"] = {
            "available": torch.cuda.is_available(),
            "note": "not measured here: " + ("--device cpu" if torch.cuda.is_available() else "no CUDA device visible"),
        }
    else:
        result["cuda"] = measure_cuda(
            profile, data[FIXED], num_workers=cfg.workers, work_dir=work_dir, bucket_window=cfg.bucket_window
        )
        seconds["cuda"] = time.perf_counter() - clock


def input_bound(loader: dict[str, Any], training: dict[str, Any], val_items: int) -> dict[str, Any]:
    """How far input-side changes alone can take the epoch ratio, from the loader section's read times.

    The reference loop reads the train and val splits every epoch; ours reads
    from RAM. With compute unchanged, the best ratio is (reference epoch -
    reference reading + our reading) / reference epoch.
    """
    items = loader["workload"]["items"]
    scale = (items + val_items) / items
    reference_read = loader["reference"]["epoch"]["median_s"] * scale
    ours_read = loader["ours"]["epoch"]["median_s"] * scale
    reference_epoch = training["reference"]["steady_epoch_s"]
    return {
        "reference_read_s_per_epoch": reference_read,
        "ours_read_s_per_epoch": ours_read,
        "reference_read_share": reference_read / reference_epoch,
        "best_epoch_time_ratio_from_input_alone": (reference_epoch - reference_read + ours_read) / reference_epoch,
    }


def cpu_model() -> str:
    """The CPU's model name: ratios between CPU kernels differ from one CPU to the next, so each figure names it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def host_info(device: torch.device) -> dict[str, Any]:
    return {
        "hostname": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "cuda_available": torch.cuda.is_available(),
        "load_average_start": os.getloadavg(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
