"""The reference recipe's loss: focal loss (gamma 2) with label smoothing (0.1) and per-class alpha."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from videns.errors import ConfigError


@dataclass
class LossConfig:
    """Focal loss settings.

    Args:
        gamma: focusing exponent; 0 gives label-smoothed cross-entropy.
        smoothing: probability mass spread over the wrong classes.
        class_alpha: weight each item by its class's clipped inverse frequency (the reference recipe: on).
    """

    gamma: float = 2.0
    smoothing: float = 0.1
    class_alpha: bool = True

    def __post_init__(self):
        if self.gamma < 0:
            raise ConfigError(f"loss.gamma must be >= 0, got {self.gamma}")
        if not 0.0 <= self.smoothing < 1.0:
            raise ConfigError(f"loss.smoothing must be in [0, 1), got {self.smoothing}")


class FocalLoss(nn.Module):
    """``mean(alpha[y] * (1 - exp(-ce))**gamma * ce)`` with ce against smoothed targets."""

    def __init__(self, alpha: torch.Tensor | None = None, gamma: float = 2.0, smoothing: float = 0.1):
        super().__init__()
        self.register_buffer("alpha", alpha, persistent=False)
        self.gamma = gamma
        self.smoothing = smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        num_classes = logits.shape[1]
        smooth = torch.full_like(logits, self.smoothing / (num_classes - 1))  # (B, C)
        smooth.scatter_(1, targets.unsqueeze(1), 1.0 - self.smoothing)
        ce = -(smooth * F.log_softmax(logits, dim=1)).sum(dim=1)  # (B,)
        focal = (1.0 - torch.exp(-ce)) ** self.gamma * ce
        if self.alpha is not None:
            focal = self.alpha.gather(0, targets) * focal
        return focal.mean()
