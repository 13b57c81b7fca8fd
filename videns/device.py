"""Which torch device a job runs on."""

import torch

from videns.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when visible; asking for CUDA without one is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA device is visible")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    """``cuda:0 (NVIDIA H200)`` or ``cpu``."""
    if device.type != "cuda":
        return str(device)
    index = cuda_index(device)
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def cuda_index(device: torch.device) -> int:
    """The index of a CUDA device; bare ``cuda`` is the current one (which some torch calls refuse unnamed)."""
    return device.index if device.index is not None else torch.cuda.current_device()


def cap_gpu_memory(device: torch.device, gigabytes: float) -> float | None:
    """Cap this process's caching allocator at ``gigabytes`` of ``device`` (0: no cap); returns the fraction set.

    Members that share one GPU then fail alone, with an out-of-memory error, where
    a slice of that size would fail, instead of starving each other.
    """
    if device.type != "cuda" or gigabytes <= 0:
        return None
    index = cuda_index(device)
    fraction = min(gigabytes * 1e9 / torch.cuda.get_device_properties(index).total_memory, 1.0)
    torch.cuda.set_per_process_memory_fraction(fraction, index)
    return fraction
