"""1-D CNN + GRU sequence classifier ("1DCNNGRU" in the heartbeat recipes).

Dilated conv blocks interleaved with residual blocks, a max-pool that halves time,
a GRU that runs over the pooled time axis (fed a flattened, length-1 sequence instead,
it would model no time at all), then a small dense head.

Padding invariance: every conv sees zeros past each item's length, exactly as it
would if the item were alone in its batch, so in eval mode an item's logits do not
depend on what it is batched with.
"""

import torch
from torch import nn
from torch.nn import functional as F

from videns.models.base import SequenceClassifier, padding_mask, recurrent_precision, require
from videns.models.recurrent import last_real_states
from videns.models.standardize import InputStandardizer


class ConvBlock1d(nn.Module):
    """Conv1d (k=3, dilated, same length) -> ReLU -> BatchNorm1d."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, 3, padding=dilation, dilation=dilation)
        self.bn = nn.BatchNorm1d(out_channels)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        # BN shifts the padded zeros; re-zero so the next conv sees what it would alone
        return self.bn(F.relu(self.conv(x))) * valid


class ResBlock1d(nn.Module):
    """Two Conv1d (k=3) + BatchNorm1d with an identity skip."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm1d(channels)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x))) * valid
        return F.relu(self.bn2(self.conv2(h)) + x) * valid


class CNN1DGRUClassifier(SequenceClassifier):
    """(dilated conv block, residual block) x num_blocks, MaxPool1d(2), GRU over time, MLP head."""

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        hidden_dim: int = 64,
        gru_hidden: int = 256,
        gru_layers: int = 2,
        num_blocks: int = 5,
        dropout: float = 0.4,
        standardize: bool = False,
    ):
        """Build the model; the defaults are the best tuned heartbeat settings.

        Args:
            feature_dim: Values per time step (D); 1 for a heartbeat signal.
            num_classes: Number of output classes.
            hidden_dim: Channels of every conv layer, and width of the dense head.
            gru_hidden: Hidden units of each GRU layer.
            gru_layers: Stacked GRU layers; dropout is applied between them.
            num_blocks: Pairs of (dilated conv block, residual block); pair i uses dilation 2**i.
            dropout: Dropout rate in the dense head and between GRU layers.
            standardize: Standardise each input feature with the training split's mean and std
                (saved with the weights).
        """
        super().__init__()
        require(hidden_dim >= 1, f"model.hidden_dim must be >= 1, got {hidden_dim}")
        require(gru_hidden >= 1, f"model.gru_hidden must be >= 1, got {gru_hidden}")
        require(gru_layers >= 1, f"model.gru_layers must be >= 1, got {gru_layers}")
        require(num_blocks >= 1, f"model.num_blocks must be >= 1, got {num_blocks}")
        require(0.0 <= dropout < 1.0, f"model.dropout must be in [0, 1), got {dropout}")
        self.standardizer = InputStandardizer(feature_dim) if standardize else None
        blocks = []
        for i in range(num_blocks):
            blocks.append(ConvBlock1d(feature_dim if i == 0 else hidden_dim, hidden_dim, 2**i))
            blocks.append(ResBlock1d(hidden_dim))
        self.blocks = nn.ModuleList(blocks)
        # torch warns about inter-layer dropout on a single layer, so pass it only when stacked
        self.gru = nn.GRU(
            hidden_dim, gru_hidden, gru_layers, batch_first=True, dropout=dropout if gru_layers > 1 else 0.0
        )
        self.head = nn.Sequential(
            nn.Linear(gru_hidden, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, num_classes),
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) zero-padded past ``lengths`` (B,) -> logits (B, num_classes)."""
        if self.standardizer is not None:
            x = self.standardizer(x, lengths)  # (B, T, D)
        h = x.transpose(1, 2)  # (B, D, T): Conv1d wants channels first
        valid = padding_mask(lengths, h.size(2), x.device).unsqueeze(1)  # (B, 1, T)
        h = h * valid  # do not trust callers' padding to be zero
        for block in self.blocks:
            h = block(h, valid)  # (B, C, T)
        # -inf past the end: a window straddling it keeps only the real value, as alone
        h = h.masked_fill(~valid, float("-inf"))
        h = F.max_pool1d(h, 2, ceil_mode=True)  # (B, C, ceil(T/2))
        last = self._gru_last_states(
            h.transpose(1, 2).float(),  # (B, ceil(T/2), C): the GRU steps over time
            (lengths.cpu() + 1) // 2,  # ceil, as the pool: an odd tail counts and 1 stays 1
        )  # (B, gru_hidden), state at each item's last real step
        return self.head(last)  # (B, num_classes)

    def _gru_last_states(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        with recurrent_precision(h.device.type):
            return last_real_states(self.gru, h, lengths)  # (B, gru_hidden)
