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
