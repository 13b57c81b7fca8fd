"""Per-feature input standardisation that travels inside a model's weights.

The mean and standard deviation are buffers, so they are saved with every
checkpoint and best model and restored with them: whatever rebuilds a model
from its weights (resume, ``jobs.ensemble_eval``, ``jobs.predict``) applies
exactly the statistics it was trained with.
"""

import numpy as np
import torch
from torch import nn

from videns.models.base import padding_mask

# A feature this flat is constant in the training data; dividing by its spread would blow up noise.
MIN_STD = 1e-6


class InputStandardizer(nn.Module):
    """``(x - mean) / std`` per feature, padding kept at zero. Identity until :meth:`set_statistics`."""

    def __init__(self, feature_dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(feature_dim))  # (D,)
        self.register_buffer("std", torch.ones(feature_dim))  # (D,)

    def set_statistics(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Use the training split's per-feature ``mean`` and ``std`` (D,); a flat feature keeps std 1."""
        std = np.where(np.asarray(std) < MIN_STD, 1.0, std)
        with torch.no_grad():
            self.mean.copy_(torch.as_tensor(np.asarray(mean), dtype=self.mean.dtype))
            self.std.copy_(torch.as_tensor(std, dtype=self.std.dtype))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D) standardised on real frames, zero past ``lengths``."""
        valid = padding_mask(lengths, x.shape[1], x.device).unsqueeze(-1)  # (B, T, 1)
        return ((x - self.mean) / self.std) * valid


def standardizer_of(model: nn.Module) -> InputStandardizer | None:
    """The model's input standardizer, or None for a model that takes raw inputs."""
    found = getattr(model, "standardizer", None)
    return found if isinstance(found, InputStandardizer) else None
