"""One optimizer step, shared by the member loop and the benchmark that times it."""

import torch
from torch import nn
from torch.nn.utils import clip_grad_norm_


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    *,
    autocast_dtype: torch.dtype | None = None,
    grad_clip: float = 0.0,
) -> torch.Tensor:
    """Forward (under autocast when ``autocast_dtype`` is set), the loss on fp32 logits, backward, clip, step.

    ``batch`` is (features, lengths, labels) with features and labels already on
    the model's device and lengths on the host. Returns the loss on the device:
    reading it is left to the caller, so a step never waits for the GPU.
    """
    features, lengths, labels = batch
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(features.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        logits = model(features, lengths)
    loss = criterion(logits.float(), labels)
    loss.backward()
    if grad_clip > 0:
        clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.detach()
