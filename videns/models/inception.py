"""InceptionTime (Ismail Fawaz et al. 2020, "InceptionTime: finding AlexNet for time series
classification"), one network of the paper's ensemble; videns ensembles members itself.

A stack of inception modules with a residual shortcut every three, global average
pooling and a linear layer, as in the authors' reference implementation except that
the branch kernels are odd (39, 19, 9 for kernel_size 40), so "same" padding is
symmetric. Padding invariance as in ``videns.models.fcn``: zero padded steps before
every conv, -inf before the max-pool, batch norm and the average over real steps only.
"""

import torch
from torch import nn

from videns.models.base import SequenceClassifier, padding_mask, require
from videns.models.masked import MaskedBatchNorm1d, masked_max_pool1d, masked_mean
from videns.models.standardize import InputStandardizer

BRANCHES = 3  # parallel convs per module, kernels kernel_size, /2 and /4


def branch_kernel_sizes(kernel_size: int) -> tuple[int, ...]:
    """kernel_size // 1, // 2, // 4, each made odd (one less when even): 40 -> (39, 19, 9)."""
    sizes = (kernel_size // 2**i for i in range(BRANCHES))
    return tuple(k if k % 2 else k - 1 for k in sizes)


class InceptionModule(nn.Module):
    """Bottleneck 1x1 conv, three parallel convs and a max-pool + 1x1 conv branch, concatenated,
    then masked batch norm and ReLU: in_channels -> 4 * filters channels, same length."""

    def __init__(self, in_channels: int, filters: int, kernel_size: int, bottleneck: int):
        super().__init__()
        # The reference skips the bottleneck on a single channel, where it would only widen the input.
        self.bottleneck = (
            nn.Conv1d(in_channels, bottleneck, 1, bias=False) if bottleneck > 0 and in_channels > 1 else None
        )
        width = bottleneck if self.bottleneck is not None else in_channels
        self.convs = nn.ModuleList(
            nn.Conv1d(width, filters, k, padding=k // 2, bias=False) for k in branch_kernel_sizes(kernel_size)
        )
        self.pool_conv = nn.Conv1d(in_channels, filters, 1, bias=False)
        self.bn = MaskedBatchNorm1d((BRANCHES + 1) * filters)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """x (B, C_in, T), zero past each length -> (B, 4 * filters, T), zero past each length."""
        # a 1x1 conv without bias keeps the padded zeros zero
        h = self.bottleneck(x) if self.bottleneck is not None else x  # (B, bottleneck, T)
        branches = [conv(h) for conv in self.convs]  # each (B, filters, T)
        branches.append(self.pool_conv(masked_max_pool1d(x, valid)))  # (B, filters, T)
        return torch.relu(self.bn(torch.cat(branches, dim=1), valid))  # (B, 4 * filters, T)


class Shortcut(nn.Module):
    """1x1 conv + masked batch norm from a residual's input to its output's width."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, 1, bias=False)
        self.bn = MaskedBatchNorm1d(out_channels)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x), valid)  # (B, out_channels, T)


class InceptionTimeClassifier(SequenceClassifier):
    """depth inception modules, a shortcut around every 3, average over real steps, linear."""

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        filters: int = 32,
        depth: int = 6,
        kernel_size: int = 40,
        bottleneck: int = 32,
        residual: bool = True,
        dropout: float = 0.0,
        standardize: bool = True,
    ):
        """Build the model; the defaults are the paper's.

        Args:
            feature_dim: Values per time step (D); 1 for a univariate series.
            num_classes: Number of output classes.
            filters: Channels of each of a module's four branches; a module outputs 4 * filters.
            depth: Inception modules, stacked.
            kernel_size: Longest branch kernel; the three convs use kernel_size, /2 and /4,
                each made odd (40 -> 39, 19, 9). At least 4.
            bottleneck: Channels of the 1x1 conv before the branch convs; 0 for none. Skipped
                where the input has a single channel, as in the paper's code.
            residual: Add a shortcut (1x1 conv + batch norm) around every three modules.
            dropout: Dropout rate on the pooled features, before the linear layer. The paper
                uses none (0.0).
            standardize: Standardise each input feature with the training split's mean and
                standard deviation, kept in the model's weights.
        """
        super().__init__()
        require(filters >= 1, f"model.filters must be >= 1, got {filters}")
        require(depth >= 1, f"model.depth must be >= 1, got {depth}")
        require(
            kernel_size >= 4, f"model.kernel_size must be >= 4 (branches use kernel_size, /2 and /4), got {kernel_size}"
        )
        require(bottleneck >= 0, f"model.bottleneck must be >= 0 (0: none), got {bottleneck}")
        require(0.0 <= dropout < 1.0, f"model.dropout must be in [0, 1), got {dropout}")
        self.standardizer = InputStandardizer(feature_dim) if standardize else None
        width = (BRANCHES + 1) * filters
        self.blocks = nn.ModuleList(
            InceptionModule(feature_dim if i == 0 else width, filters, kernel_size, bottleneck) for i in range(depth)
        )
        # shortcut j spans modules 3j..3j+2; a last group of fewer than three has none, as in the paper
        self.shortcuts = nn.ModuleList(
            Shortcut(feature_dim if j == 0 else width, width) for j in range(depth // 3 if residual else 0)
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) padded past ``lengths`` (B,) -> logits (B, num_classes)."""
        if self.standardizer is not None:
            x = self.standardizer(x, lengths)  # (B, T, D)
        valid = padding_mask(lengths, x.shape[1], x.device).unsqueeze(1)  # (B, 1, T)
        h = x.transpose(1, 2) * valid  # (B, D, T): channels first; do not trust callers' padding
        residual = h
        for i, block in enumerate(self.blocks):
            h = block(h, valid)  # (B, 4 * filters, T)
            if i % 3 == 2 and i // 3 < len(self.shortcuts):
                h = torch.relu(h + self.shortcuts[i // 3](residual, valid))  # (B, 4 * filters, T)
                residual = h
        return self.head(self.dropout(masked_mean(h, valid)))  # (B, num_classes)
