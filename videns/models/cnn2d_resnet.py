"""2-D CNN with ResNet blocks over a sequence seen as an image ("2DCNN" in the heartbeat recipes).

Two ways to make the image:

- variable length (default): the sequence itself, ``[B, 1, T, D]``. Padded rows are
  re-zeroed after every conv and left out of a masked mean over time before the
  head, so in eval mode an item's logits do not depend on what it is batched with.
- ``image_shape=(H, W)``: the heartbeat recipe's way for fixed-length 1-D signals. The first
  ``length * D`` values are zero-padded or cropped to ``H * W`` and laid out row by
  row (192 heartbeat samples -> 16 x 12); the pooled map is flattened into the head.
"""

import torch
from torch import nn
from torch.nn import functional as F

from videns.errors import ConfigError
from videns.models.base import SequenceClassifier, padding_mask, require, to_device


def masked(h: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Zero ``h`` where ``valid`` (broadcast) is False; images (None) have no padding."""
    return h if valid is None else h * valid


class ConvBlock2d(nn.Module):
    """Conv2d 3x3 -> ReLU -> BatchNorm2d."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        # BN shifts the padded zeros; re-zero so the next conv sees what it would alone
        return masked(self.bn(F.relu(self.conv(x))), valid)


class ResBlock2d(nn.Module):
    """Two Conv2d 3x3 + BatchNorm2d with an identity skip."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        h = masked(F.relu(self.bn1(self.conv1(x))), valid)
        return masked(F.relu(self.bn2(self.conv2(h)) + x), valid)


class CNN2DResNetClassifier(SequenceClassifier):
    """Conv block, num_blocks residual blocks, MaxPool2d(2), MLP head; on the sequence or an image."""

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        hidden_dim: int = 128,
        channels: int = 128,
        num_blocks: int = 1,
        dropout: float = 0.3,
        image_shape: tuple[int, int] | None = None,
    ):
        """Build the model; the defaults are the best tuned heartbeat settings.

        Args:
            feature_dim: Values per time step (D); 1 for a heartbeat signal.
            num_classes: Number of output classes.
            hidden_dim: Width of the dense head.
            channels: Channels of every conv layer.
            num_blocks: Residual blocks after the first conv block.
            dropout: Dropout rate in the dense head.
            image_shape: [H, W] to lay a fixed-length signal out row by row as an H x W
                image (the heartbeat recipe uses [16, 12] for 192 samples); None treats the sequence
                itself as a T x D image of any length.
        """
        super().__init__()
        require(hidden_dim >= 1, f"model.hidden_dim must be >= 1, got {hidden_dim}")
        require(channels >= 1, f"model.channels must be >= 1, got {channels}")
        require(num_blocks >= 1, f"model.num_blocks must be >= 1, got {num_blocks}")
        require(0.0 <= dropout < 1.0, f"model.dropout must be in [0, 1), got {dropout}")
        if image_shape is not None:
            require(
                len(image_shape) == 2 and min(image_shape) >= 2,
                f"model.image_shape must be [H, W] with both >= 2, got {list(image_shape)}",
            )
            image_shape = tuple(image_shape)
            pooled_size = (image_shape[0] // 2) * (image_shape[1] // 2)
        else:
            pooled_size = (feature_dim + 1) // 2  # the feature axis survives the time pooling
        self.image_shape = image_shape
        self.feature_dim = feature_dim
        self.blocks = nn.ModuleList([ConvBlock2d(1, channels)] + [ResBlock2d(channels) for _ in range(num_blocks)])
        self.head = nn.Sequential(
            nn.Linear(channels * pooled_size, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, num_classes),
        )

    def check_item_length(self, steps: int, source: str) -> None:
        """Image mode lays out exactly H * W values: items of another size would be cropped or padded out."""
        if self.image_shape is None:
            return
        H, W = self.image_shape
        values = steps * self.feature_dim
        if values != H * W:
            raise ConfigError(
                f"{source}: model.image_shape {[H, W]} needs items of {H * W} values, but these hold {values} "
                f"({steps} steps x {self.feature_dim} features); convert with --pad_to {H * W // self.feature_dim} "
                f"or choose an image_shape of {values} values"
            )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) zero-padded past ``lengths`` (B,) -> logits (B, num_classes)."""
        if self.image_shape is None:
            h = self._sequence_features(x, lengths)  # (B, C, ceil(D/2))
        else:
            h = self._image_features(x, lengths)  # (B, C, H/2, W/2)
        return self.head(h.flatten(1))  # (B, num_classes)

    def _sequence_features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = padding_mask(lengths, x.size(1), x.device)[:, None, :, None]  # (B, 1, T, 1)
        h = masked(x.unsqueeze(1), valid)  # (B, 1, T, D)
        for block in self.blocks:
            h = block(h, valid)  # (B, C, T, D)
        # -inf past the end: a window straddling it keeps only the real rows, as alone
        h = F.max_pool2d(h.masked_fill(~valid, float("-inf")), 2, ceil_mode=True)  # (B, C, T', D')
        lengths = (to_device(lengths, x.device) + 1) // 2  # ceil, as the pool: an odd tail counts, 1 stays 1
        valid = padding_mask(lengths, h.size(2), x.device)[:, None, :, None]  # (B, 1, T', 1)
        # where(), not a product: the all-padding windows hold -inf, and -inf * 0 is NaN
        h = torch.where(valid, h, 0.0).sum(2)  # (B, C, D')
        return h / lengths[:, None, None].to(h.dtype)  # masked mean over time

    def _image_features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        H, W = self.image_shape
        if D > 1 and T * D > H * W:
            raise ConfigError(
                f"model.image_shape {[H, W]} holds {H * W} values but items of {T} steps x {D} "
                f"features hold {T * D}; cropping would cut steps apart"
            )
        flat = x.reshape(B, T * D) * padding_mask(lengths * D, T * D, x.device)  # (B, T*D), step-major
        if T * D < H * W:
            flat = F.pad(flat, (0, H * W - T * D))  # (B, H*W)
        h = flat[:, : H * W].reshape(B, 1, H, W)  # (B, 1, H, W), filled row by row
        for block in self.blocks:
            h = block(h, None)  # (B, C, H, W)
        return F.max_pool2d(h, 2)  # (B, C, H/2, W/2)
