"""Fully convolutional network (Wang, Yan & Oates 2017, "Time series classification from
scratch with deep neural networks: a strong baseline").

Three conv blocks (conv -> batch norm -> ReLU, same length), global average pooling,
a linear layer. Padding invariance: padded steps are zero before every conv, batch
norm counts real steps only and the average runs over real steps, so in eval mode an
item's logits do not depend on what it is batched with or how much padding follows.
"""

import torch
from torch import nn
from torch.nn import functional as F

from videns.models.base import SequenceClassifier, padding_mask, require
from videns.models.masked import MaskedBatchNorm1d, masked_mean
from videns.models.standardize import InputStandardizer


class ConvBNReLU(nn.Module):
    """Conv1d ("same" length, no bias: batch norm removes it) -> masked BatchNorm1d -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        # "same" as in Keras and torch: an even kernel's extra padded step goes on the right.
        # Padded here, as torch's padding="same" would copy too, and warn about it.
        self.padding = ((kernel_size - 1) // 2, kernel_size // 2)
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, bias=False)
        self.bn = MaskedBatchNorm1d(out_channels)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """x (B, C_in, T), zero past each length -> (B, C_out, T), zero past each length."""
        h = self.conv(F.pad(x, self.padding))  # (B, C_out, T)
        return torch.relu(self.bn(h, valid))


class FCNClassifier(SequenceClassifier):
    """Conv blocks (128, 256, 128 channels; kernels 8, 5, 3), average over real steps, linear."""

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        channels: tuple[int, ...] = (128, 256, 128),
        kernel_sizes: tuple[int, ...] = (8, 5, 3),
        dropout: float = 0.0,
        standardize: bool = True,
    ):
        """Build the model; the defaults are the paper's.

        Args:
            feature_dim: Values per time step (D); 1 for a univariate series.
            num_classes: Number of output classes.
            channels: Output channels of each conv block, first to last (paper: 128, 256, 128).
            kernel_sizes: Kernel size of each conv block, one per entry of channels (paper: 8, 5, 3).
            dropout: Dropout rate on the pooled features, before the linear layer. The paper
                uses none (0.0): batch norm and the average over time already regularise.
            standardize: Standardise each input feature with the training split's mean and
                standard deviation, kept in the model's weights.
        """
        super().__init__()
        channels, kernel_sizes = tuple(channels), tuple(kernel_sizes)  # JSON gives lists
        require(
            len(channels) >= 1 and min(channels) >= 1,
            f"model.channels must be one or more positive channel counts, got {list(channels)}",
        )
        require(
            len(kernel_sizes) == len(channels) and min(kernel_sizes, default=0) >= 1,
            f"model.kernel_sizes must be {len(channels)} positive sizes, one per entry of model.channels, "
            f"got {list(kernel_sizes)}",
        )
        require(0.0 <= dropout < 1.0, f"model.dropout must be in [0, 1), got {dropout}")
        self.standardizer = InputStandardizer(feature_dim) if standardize else None
        widths = (feature_dim, *channels)
        self.blocks = nn.ModuleList(
            ConvBNReLU(widths[i], widths[i + 1], kernel_size) for i, kernel_size in enumerate(kernel_sizes)
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels[-1], num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) padded past ``lengths`` (B,) -> logits (B, num_classes)."""
        if self.standardizer is not None:
            x = self.standardizer(x, lengths)  # (B, T, D)
        valid = padding_mask(lengths, x.shape[1], x.device).unsqueeze(1)  # (B, 1, T)
        h = x.transpose(1, 2) * valid  # (B, D, T): channels first; do not trust callers' padding
        for block in self.blocks:
            h = block(h, valid)  # (B, C_i, T)
        return self.head(self.dropout(masked_mean(h, valid)))  # (B, num_classes)
