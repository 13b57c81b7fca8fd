"""What every sequence classifier in videns accepts and returns."""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from videns.errors import ConfigError


class SequenceClassifier(nn.Module):
    """Base of all models: ``forward(x (B, T, D), lengths (B,)) -> logits (B, C)``.

    Constructors take ``feature_dim`` and ``num_classes`` first; both come from
    the data files, never from the config. ``lengths`` is an int64 CPU tensor,
    so models can branch on it without a device sync.

    A model that standardises its inputs holds an ``InputStandardizer`` in
    ``standardizer``; the trainer gives it the training split's statistics.
    """

    # Annotation only: a class attribute would hide the submodule that nn.Module keeps in _modules.
    standardizer: nn.Module | None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def check_item_length(self, steps: int, source: str) -> None:
        """Raise ConfigError when items padded to ``steps`` steps (read from ``source``) do not suit the model.

        Most models take any length; one with a fixed input size overrides this, so a
        member fails at its start instead of training on cropped or stretched items.
        """


def require(condition: bool, message: str) -> None:
    """Raise ConfigError with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


@contextmanager
def recurrent_precision(device_type: str) -> Iterator[None]:
    """Run recurrent layers (given fp32 inputs) in fp32, even inside bf16 autocast.

    Autocast's cuDNN RNN wrapper casts to fp16 whatever dtype autocast asks
    for, and fp16 gradients underflow without a GradScaler; on CPU autocast
    runs them in bf16. cuDNN still uses TF32 tensor cores for fp32 RNNs
    (``torch.backends.cudnn.allow_tf32``, on by default).
    """
    with torch.autocast(device_type, enabled=False):
        yield


def padding_mask(lengths: torch.Tensor, max_len: int, device: torch.device) -> torch.Tensor:
    """(B, T) bool, True at real frames."""
    return torch.arange(max_len, device=device)[None, :] < to_device(lengths, device)[:, None]


def to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor on ``device`` without waiting for the GPU: a blocking copy
    would make the host wait for every kernel queued so far."""
    if device.type != "cuda" or host.device.type == "cuda":
        return host.to(device)
    return (host if host.is_pinned() else host.pin_memory()).to(device, non_blocking=True)


def pack_by_length(x: torch.Tensor, lengths: torch.Tensor) -> tuple[PackedSequence, torch.Tensor]:
    """Pack batch-first ``x`` longest first; also return the index that restores the batch order.

    ``pack_padded_sequence(enforce_sorted=False)`` does the same, but copies its
    permutation to the GPU blocking, and unpacking brings it back to the host:
    two host syncs per step.
    """
    order = torch.argsort(lengths, descending=True, stable=True)
    order_on_device, restore_on_device = to_device(torch.stack((order, torch.argsort(order))), x.device)
    packed = pack_padded_sequence(x.index_select(0, order_on_device), lengths[order], batch_first=True)
    return packed, restore_on_device
