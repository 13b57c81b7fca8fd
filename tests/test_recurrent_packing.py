"""Recurrent models run unpacked where packing buys nothing, and get exactly what packing gives."""

import pytest
import torch
from torch import nn
from torch.nn.utils import rnn as rnn_utils

from videns.models.cnn1d_gru import CNN1DGRUClassifier
from videns.models.recurrent import last_real_states


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def packed_last_states(rnn: nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The reference: pack_padded_sequence, top layer's h_n."""
    state = rnn(rnn_utils.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))[1]
    return (state[0] if isinstance(state, tuple) else state)[-1]


def grads(module: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in module.parameters()]


@pytest.mark.parametrize("cls", [nn.GRU, nn.LSTM])
@pytest.mark.parametrize("lengths", [[9, 3, 1, 6], [7, 7, 7, 7], [9, 9, 9, 9]])
def test_states_and_gradients_equal_the_packed_path_with_garbage_in_the_padding(cls, lengths):
    torch.manual_seed(0)
    rnn = cls(5, 8, num_layers=2, batch_first=True)
    lengths = torch.tensor(lengths)
    x = torch.randn(4, int(lengths.max()) + 2, 5)
    for i, n in enumerate(lengths):
        x[i, n:] = float("nan") if i % 2 else 1e6  # garbage past each length
    weights = torch.randn(4, 8)

    reference = packed_last_states(rnn, x, lengths)
    (reference * weights).sum().backward()
    reference_grads = grads(rnn)
    rnn.zero_grad()
    ours = last_real_states(rnn, x, lengths)
    (ours * weights).sum().backward()

    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    for got, want in zip(grads(rnn), reference_grads):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_cpu_runs_the_rnn_on_the_padded_batch_not_packed():
    rnn = nn.GRU(3, 4, batch_first=True)
    seen = []
    rnn.register_forward_pre_hook(lambda _module, args: seen.append(type(args[0])))
    last_real_states(rnn, torch.randn(3, 6, 3), torch.tensor([6, 2, 4]))  # variable lengths
    last_real_states(rnn, torch.randn(3, 6, 3), torch.tensor([6, 6, 6]))  # equal lengths
    assert seen == [torch.Tensor, torch.Tensor]


def test_refuses_a_bidirectional_rnn():
    with pytest.raises(ValueError, match="unidirectional"):
        last_real_states(nn.GRU(3, 4, batch_first=True, bidirectional=True), torch.randn(2, 5, 3), torch.tensor([5, 2]))


def test_cnn1d_gru_gradients_equal_the_always_packed_model(monkeypatch):
    """The whole model, a training step on variable lengths, learns exactly what the always-packed one would."""
    import videns.models.cnn1d_gru as cnn1d_gru

    torch.manual_seed(0)
    model = CNN1DGRUClassifier(1, 3, hidden_dim=8, gru_hidden=6, gru_layers=2, num_blocks=2, dropout=0.0).train()
    lengths = torch.tensor([21, 8, 15, 1])
    x = torch.randn(4, 21, 1)
    for i, n in enumerate(lengths):
        x[i, n:] = 1e3  # the model zeroes it; the result must not care
    labels = torch.tensor([0, 1, 2, 1])

    def step() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        logits = model(x, lengths)
        nn.functional.cross_entropy(logits, labels).backward()
        return logits.detach(), grads(model)

    ours_logits, ours_grads = step()
    monkeypatch.setattr(cnn1d_gru, "last_real_states", packed_last_states)
    packed_logits, packed_grads = step()
    torch.testing.assert_close(ours_logits, packed_logits, atol=1e-5, rtol=0)
    for got, want in zip(ours_grads, packed_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
