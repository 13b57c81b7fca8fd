"""A unidirectional RNN's top-layer state at each item's last real step, packed only where it pays."""

import torch
from torch import nn

from videns.models.base import pack_by_length, padding_mask, to_device


def last_real_states(rnn: nn.GRU | nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Run ``rnn`` (unidirectional, batch_first) over ``x`` (B, T, F) -> (B, hidden) at each item's last real step.

    Equal lengths need no packing anywhere (MIT-BIH: every beat 187 of 192 steps). On CPU a packed sequence
    leaves oneDNN's fused kernel for a step loop over shrinking batches (a ``cnn1d_gru`` step at
    B=32, T=427 spent 3.1-3.5 s in the packed GRU and 0.7-0.85 s unpacked), so the
    padded batch runs whole: a unidirectional RNN's output at step t depends only on
    steps <= t, and gathering it at ``length - 1`` gives exactly the packed final
    state. On CUDA variable lengths stay packed, for cuDNN's packed kernels; nobody
    has measured unpacked-and-gather against that on a GPU yet.

    Args:
        rnn: a unidirectional ``nn.GRU`` or ``nn.LSTM`` with ``batch_first=True``.
        x: (B, T, F) inputs; values past each length are ignored, whatever they are.
        lengths: (B,) int64 real lengths on the CPU, each in [1, T].
    """
    if rnn.bidirectional or not rnn.batch_first:
        raise ValueError("last_real_states needs a unidirectional, batch_first RNN")
    max_len = x.shape[1]
    if bool((lengths == lengths[0]).all()):  # equal lengths, padded or not: run just the real steps
        return _top_layer(rnn(x[:, : int(lengths[0])])[1])  # (B, hidden)
    if x.device.type == "cuda":
        packed, restore = pack_by_length(x, lengths)
        return _top_layer(rnn(packed)[1]).index_select(0, restore)  # (B, hidden)
    # zero the padding: garbage there (say -inf) would turn the unused outputs' zero
    # gradients into NaN weight gradients (0 * inf)
    x = torch.where(padding_mask(lengths, max_len, x.device).unsqueeze(-1), x, 0.0)
    outputs, _ = rnn(x)  # (B, T, hidden)
    last = to_device(lengths - 1, x.device).view(-1, 1, 1).expand(-1, 1, outputs.shape[2])  # (B, 1, hidden)
    return outputs.gather(1, last).squeeze(1)  # (B, hidden)


def _top_layer(state: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """h_n[-1] (B, hidden) of a GRU's h_n or an LSTM's (h_n, c_n)."""
    h_n = state[0] if isinstance(state, tuple) else state  # (layers, B, hidden)
    return h_n[-1]
