"""1-D CNN + GRU sequence classifier (seed 004, "1DCNNGRU").

Dilated conv blocks interleaved with residual blocks, a max-pool that halves time,
a GRU that runs over the pooled time axis (the original fed it a length-1 sequence,
so it modelled no time at all), then a small dense head.

Padding invariance: every conv sees zeros past each item's length, exactly as it
would if the item were alone in its batch, so in eval mode an item's logits do not
depend on what it is batched with.
"""

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence

from videns.errors import ConfigError


def check_int(name: str, value: int, minimum: int) -> None:
    """Raise ConfigError unless ``model.<name>`` is an integer >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"model.{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"model.{name} must be >= {minimum}, got {value}")


def check_dropout(value: float) -> None:
    """Raise ConfigError unless ``model.dropout`` is a probability below 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {value!r}")


def length_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """(B, size) bool, True at each item's real positions."""
    return torch.arange(size, device=lengths.device) < lengths[:, None]


def masked(h: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Zero ``h`` where ``valid`` is False (broadcast); no-op for None."""
    return h if valid is None else h * valid


def pooled_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Lengths after a ceil-mode pool of 2: an odd tail still counts, and 1 stays 1."""
    return (lengths + 1) // 2


class ConvBlock1d(nn.Module):
    """Conv1d (k=3, dilated, same length) -> ReLU -> BatchNorm1d."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, 3, padding=dilation, dilation=dilation)
        self.bn = nn.BatchNorm1d(out_channels)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        # BN shifts the padded zeros; re-zero so the next conv sees what it would alone
        return masked(self.bn(F.relu(self.conv(x))), valid)


class ResBlock1d(nn.Module):
    """Two Conv1d (k=3) + BatchNorm1d with an identity skip."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm1d(channels)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        h = masked(F.relu(self.bn1(self.conv1(x))), valid)
        return masked(F.relu(self.bn2(self.conv2(h)) + x), valid)


class CNN1DGRUClassifier(nn.Module):
    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        hidden_dim: int = 64,
        gru_hidden: int = 256,
        gru_layers: int = 2,
        num_blocks: int = 5,
        dropout: float = 0.4,
    ):
        """1-D CNN + GRU over time; defaults are the seed's best tuned settings.

        Args:
            feature_dim: Values per time step (D); 1 for a heartbeat signal.
            num_classes: Number of output classes.
            hidden_dim: Channels of every conv layer, and width of the dense head.
            gru_hidden: Hidden units of each GRU layer.
            gru_layers: Stacked GRU layers; dropout is applied between them.
            num_blocks: Pairs of (dilated conv block, residual block); pair i uses dilation 2**i.
            dropout: Dropout rate in the dense head and between GRU layers.
        """
        super().__init__()
        check_int("feature_dim", feature_dim, 1)
        check_int("num_classes", num_classes, 1)
        check_int("hidden_dim", hidden_dim, 1)
        check_int("gru_hidden", gru_hidden, 1)
        check_int("gru_layers", gru_layers, 1)
        check_int("num_blocks", num_blocks, 1)
        check_dropout(dropout)
        blocks = []
        for i in range(num_blocks):
            blocks.append(ConvBlock1d(feature_dim if i == 0 else hidden_dim, hidden_dim, 2**i))
            blocks.append(ResBlock1d(hidden_dim))
        self.blocks = nn.ModuleList(blocks)
        # torch warns about inter-layer dropout on a single layer, so pass it only when stacked
        self.gru = nn.GRU(hidden_dim, gru_hidden, gru_layers, batch_first=True,
                          dropout=dropout if gru_layers > 1 else 0.0)
        self.head = nn.Sequential(
            nn.Linear(gru_hidden, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, num_classes),
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) zero-padded past ``lengths`` (B,) -> logits (B, num_classes)."""
        lengths = lengths.to(x.device)
        h = x.transpose(1, 2)  # (B, D, T): Conv1d wants channels first
        valid = length_mask(lengths, h.size(2)).unsqueeze(1)  # (B, 1, T)
        h = masked(h, valid)  # do not trust callers' padding to be zero
        for block in self.blocks:
            h = block(h, valid)  # (B, C, T)
        # -inf past the end: a window straddling it keeps only the real value, as alone
        h = h.masked_fill(~valid, float("-inf"))
        h = F.max_pool1d(h, 2, ceil_mode=True)  # (B, C, ceil(T/2))
        packed = pack_padded_sequence(
            h.transpose(1, 2),  # (B, ceil(T/2), C): the GRU steps over time
            pooled_lengths(lengths).cpu(),
            batch_first=True,
            enforce_sorted=False,
        )
        _, h_n = self.gru(packed)  # (layers, B, gru_hidden), state at each item's last step
        return self.head(h_n[-1])  # (B, num_classes)
