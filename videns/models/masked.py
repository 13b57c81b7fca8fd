"""Building blocks for conv models on zero-padded batches: padding never reaches a real step.

A batch pads each item to the longest with zeros. A convolution with "same"
padding already sees zeros past an item's end when it is alone, so zeroing the
padded steps before every conv keeps real steps exactly as they would be alone.
What else would mix padding in is made to skip it here: batch norm's statistics,
the max-pool window and the average over time.

Every function takes ``valid``: (B, 1, T) bool, True at real steps.
"""

import torch
from torch import nn
from torch.nn import functional as F


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics count real steps only; padded steps come out zero.

    In training, mean and variance are taken over the real steps of all items
    (in float32, also under bf16 autocast) and the running statistics are updated
    from them as ``nn.BatchNorm1d`` does (momentum, unbiased variance). In eval
    the running statistics are used, so an item's output does not depend on its
    batch. Parameters, buffers and state_dict keys are those of ``nn.BatchNorm1d``;
    without ``valid`` it is exactly ``nn.BatchNorm1d``.
    """

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, T), valid (B, 1, T) bool -> (B, C, T) in x's dtype, zero where not valid."""
        if valid is None:
            return super().forward(x)
        x32 = x.float()
        if self.training or self.running_mean is None:
            mean, var = self._batch_statistics(x32, valid)
        else:
            mean, var = self.running_mean, self.running_var
        scale = torch.rsqrt(var + self.eps)  # (C,)
        if self.weight is not None:
            scale = scale * self.weight
        shift = -mean * scale if self.bias is None else self.bias - mean * scale  # (C,)
        y = x32 * scale[:, None] + shift[:, None]  # (B, C, T)
        return (y * valid).to(x.dtype)

    def _batch_statistics(self, x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Biased mean and variance (C,) over real steps; updates the running statistics in training."""
        count = valid.sum().float()  # real steps in the batch, on x's device: no host sync
        mean = (x * valid).sum(dim=(0, 2)) / count  # (C,)
        centred = (x - mean[:, None]) * valid  # (B, C, T), two passes: stable for large means
        var = centred.square().sum(dim=(0, 2)) / count  # (C,)
        if self.training and self.track_running_stats and self.running_mean is not None:
            self._update_running_statistics(mean, var * count / (count - 1).clamp(min=1))
        return mean, var

    @torch.no_grad()
    def _update_running_statistics(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        # momentum None means a cumulative average, as in nn.BatchNorm1d
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), factor)


def masked_max_pool1d(x: torch.Tensor, valid: torch.Tensor, kernel_size: int = 3) -> torch.Tensor:
    """Max-pool (stride 1, same length, odd ``kernel_size``) over real steps only; zero past the end.

    A window that reaches past an item's end keeps only its real values, as it
    would when the item is alone (max_pool1d's own padding is -inf).
    """
    h = x.masked_fill(~valid, float("-inf"))  # (B, C, T)
    h = F.max_pool1d(h, kernel_size, stride=1, padding=kernel_size // 2)  # (B, C, T)
    # masked_fill, not a product: -inf * 0 would be nan
    return h.masked_fill(~valid, 0.0)


def masked_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Global average pooling over each item's real steps: x (B, C, T) -> (B, C), in float32.

    Float32 because a bf16 sum over hundreds of steps keeps only about 3 digits.
    """
    total = (x.float() * valid).sum(dim=2)  # (B, C)
    return total / valid.sum(dim=2).clamp(min=1)  # (B, C); count (B, 1)
