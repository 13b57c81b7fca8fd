"""The CUDA section: full-size model step time and peak memory in fp32 and bf16, the MIG-slice
check, and the training comparison on the GPU. Runs only where a CUDA device is visible.

The MIG check caps the caching allocator with
``torch.cuda.set_per_process_memory_fraction`` so that the allocator plus what
already sits outside it (the CUDA context, measured here) stays within a 9.8 GB
slice, then takes training steps at batch B. A step that runs out of memory
under the cap means the model does not fit the slice.
"""

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from videns.bench.data import BenchData
from videns.bench.measure import ratio
from videns.bench.profiles import Profile, describe_model
from videns.bench.training import NUM_CLASSES, compare_training, random_batch, time_train_steps
from videns.device import cuda_index
from videns.models.temporal import TemporalAttentionClassifier
from videns.monitor import release_cached_gpu_memory

log = logging.getLogger(__name__)

MIG_SLICE_BYTES = int(9.8e9)  # the reference recipe's GPU: an A100 MIG slice with 9.8 GB
MIN_TIMED_STEPS = 5
GPU_TRAINING_LR = 1e-3  # the reference recipe's learning rate; the full-size model is not the small CPU one


def measure_cuda(
    profile: Profile, data: BenchData, *, num_workers: int, work_dir: Path, bucket_window: int
) -> dict[str, Any]:
    """Everything the CUDA section reports; ``{"available": False, ...}`` without a device."""
    if not torch.cuda.is_available():
        return {"available": False, "note": "not measured here: no CUDA device visible"}
    device = torch.device("cuda")
    props = torch.cuda.get_device_properties(device)
    batch = random_batch(profile.batch_size, profile.max_frames, profile.feature_dim)
    steps = {precision: _steps_and_memory(profile, batch, device, precision) for precision in ("fp32", "bf16")}
    num_params = sum(
        p.numel()
        for p in TemporalAttentionClassifier(profile.feature_dim, NUM_CLASSES, **profile.full_model).parameters()
    )
    workload = {
        "model": describe_model(profile.full_model, num_params),
        "batch": profile.batch_size,
        "workers": 0,
        "device": f"cuda ({props.name})",
        "data": f"random, all lengths {profile.max_frames}",
        "feature_dim": profile.feature_dim,
    }
    gpu_profile = replace(profile, lr=GPU_TRAINING_LR)
    return {
        "available": True,
        "device_name": props.name,
        "total_memory_bytes": props.total_memory,
        "torch_cuda": torch.version.cuda,
        "cudnn": {
            "enabled": torch.backends.cudnn.enabled,
            "benchmark": torch.backends.cudnn.benchmark,
            "version": torch.backends.cudnn.version(),
        },
        "full_model_steps": {
            "workload": workload,
            **steps,
            "bf16_step_ratio": ratio(steps["bf16"]["median_s"], steps["fp32"]["median_s"]),
        },
        "mig_fit": {"workload": workload, **_fits_in_slice(profile, batch, device)},
        "training": compare_training(
            data,
            gpu_profile,
            model_args=profile.full_model,
            num_workers=num_workers,
            device=device,
            work_dir=Path(work_dir) / "cuda",
            bucket_window=bucket_window,
            precision="bf16",
        ),
    }


def _steps_and_memory(
    profile: Profile, batch, device: torch.device, precision: str, steps: int | None = None
) -> dict[str, Any]:
    """Our training step (masked, unpacked at equal lengths, fused AdamW) and its peak memory."""
    release_cached_gpu_memory()
    torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    model = TemporalAttentionClassifier(profile.feature_dim, NUM_CLASSES, **profile.full_model).to(device)
    timing = time_train_steps(
        model,
        batch,
        device=device,
        steps=steps or max(profile.full_steps, MIN_TIMED_STEPS),
        warmup=2,
        autocast_dtype=torch.bfloat16 if precision == "bf16" else None,
        fused=True,
    )
    del model
    result = {
        "precision": precision,
        **timing,
        "peak_allocated_bytes": torch.cuda.max_memory_allocated(device),
        "peak_reserved_bytes": torch.cuda.max_memory_reserved(device),
    }
    release_cached_gpu_memory()
    return result


def _fits_in_slice(profile: Profile, batch, device: torch.device) -> dict[str, Any]:
    release_cached_gpu_memory()
    free, total = torch.cuda.mem_get_info(device)
    outside_allocator = total - free - torch.cuda.memory_reserved(device)  # CUDA context, other processes
    allocator_limit = max(MIG_SLICE_BYTES - outside_allocator, 0)
    fraction = min(allocator_limit / total, 1.0)
    checks: dict[str, Any] = {}
    torch.cuda.set_per_process_memory_fraction(fraction, cuda_index(device))
    try:
        for precision in ("bf16", "fp32"):
            error = None
            try:
                measured = _steps_and_memory(profile, batch, device, precision, steps=2)
            except RuntimeError as err:  # torch.cuda.OutOfMemoryError, or cuDNN/cuBLAS failing to allocate
                if not _out_of_memory(err):
                    raise
                error = " ".join(str(err).split())[:300]
            if error is None:
                checks[precision] = {
                    "fits": True,
                    "peak_reserved_bytes": measured["peak_reserved_bytes"],
                    "median_s": measured["median_s"],
                }
            else:
                checks[precision] = {"fits": False, "error": error}
            release_cached_gpu_memory()
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, cuda_index(device))
    return {
        "slice_bytes": MIG_SLICE_BYTES,
        "outside_allocator_bytes": outside_allocator,
        "allocator_limit_bytes": allocator_limit,
        "memory_fraction": fraction,
        **checks,
        "fits": bool(checks.get("bf16", {}).get("fits")),
        "note": "fits = bf16 steps at this batch run under the cap (fp32 reported too)",
    }


def _out_of_memory(err: RuntimeError) -> bool:
    message = str(err)
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in message or "ALLOC_FAILED" in message
