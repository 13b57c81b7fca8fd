"""The model ignores padding, the loss matches the focal-loss formula, the LR follows epochs."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from videns.errors import ConfigError
from videns.models import TemporalAttentionClassifier
from videns.training.loss import FocalLoss
from videns.training.optim import LRSchedule, ScheduleConfig, cosine_restarts_lr


@pytest.mark.parametrize("bidirectional", [True, False])
def test_logits_do_not_depend_on_padding_or_batch_mates(bidirectional):
    torch.manual_seed(0)
    model = TemporalAttentionClassifier(
        12, 4, hidden_dim=16, num_lstm_layers=2, num_attention_heads=4, bidirectional=bidirectional
    ).eval()
    lengths = torch.tensor([30, 5, 17, 9])
    x = torch.randn(4, 30, 12)
    for i, n in enumerate(lengths):
        x[i, n:] = 0
    with torch.no_grad():
        batched = model(x, lengths)
        for i, n in enumerate(lengths):
            alone = model(x[i : i + 1, :n], lengths[i : i + 1])
            assert torch.allclose(alone[0], batched[i], atol=1e-5)
            # garbage in the padded frames changes nothing either
            noisy = x[i : i + 1].clone()
            noisy[0, n:] = 100.0
            assert torch.allclose(model(noisy, lengths[i : i + 1])[0], batched[i], atol=1e-5)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_our_lstm_paths_equal_torch_packing_at_real_frames_with_gradients(bidirectional):
    """Both of our paths give what torch's packing gives, outputs and weight gradients alike."""
    torch.manual_seed(0)
    model = TemporalAttentionClassifier(
        12, 4, hidden_dim=16, num_lstm_layers=3, num_attention_heads=4, dropout=0.0, bidirectional=bidirectional
    ).train()
    lengths = torch.tensor([30, 5, 17, 30, 1])
    h = torch.randn(5, 30, 16)
    real = torch.arange(30)[None, :] < lengths[:, None]
    h[~real] = 50.0  # garbage in the padding

    def run(path):
        model.zero_grad()
        out = path(h, lengths)
        (out[real] ** 2).sum().backward()
        return out[real].detach(), [p.grad.clone() for p in model.lstm.parameters()]

    def packed(h, lengths):
        out, _ = model.lstm(pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False))
        return pad_packed_sequence(out, batch_first=True, total_length=30)[0]

    reference, reference_grads = run(packed)
    ours, ours_grads = run(model._lstm_by_direction)
    assert torch.allclose(ours, reference, atol=1e-5)
    for got, want in zip(ours_grads, reference_grads):
        assert torch.allclose(got, want, atol=1e-4)
    # The CUDA path sorts the batch itself, to spare the host syncs of enforce_sorted=False.
    sorted_ourselves, sorted_grads = run(model._lstm_packed)
    assert torch.equal(sorted_ourselves, reference)
    for got, want in zip(sorted_grads, reference_grads):
        assert torch.allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("lengths", [[10, 10, 10], [10, 6, 2]], ids=["equal", "variable"])
def test_the_lstm_runs_in_fp32_under_bf16_autocast(lengths):
    """Only the LSTM leaves autocast: the layers around it still run in bf16."""
    model = TemporalAttentionClassifier(8, 3, hidden_dim=16, num_lstm_layers=2, num_attention_heads=2)
    seen = []
    model.attention.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.randn(3, 10, 8), torch.tensor(lengths))
    assert seen == [torch.float32]
    assert logits.dtype == torch.bfloat16


def test_seed_architecture_size():
    model = TemporalAttentionClassifier(1280, 4)
    assert model.lstm.hidden_size == 768 and model.lstm.num_layers == 4 and model.lstm.bidirectional
    assert model.attention.num_heads == 12 and model.attention.embed_dim == 1536
    assert [m.out_features for m in model.classifier if isinstance(m, torch.nn.Linear)] == [768, 512, 256, 4]


def test_heads_must_divide_the_attention_width():
    with pytest.raises(ConfigError, match="num_attention_heads=5 must divide the attention width 32"):
        TemporalAttentionClassifier(8, 4, hidden_dim=16, num_attention_heads=5)


def test_focal_loss_matches_direct_computation():
    torch.manual_seed(1)
    logits, targets = torch.randn(6, 4), torch.tensor([0, 3, 1, 1, 2, 0])
    alpha = torch.tensor([0.5, 2.0, 1.0, 10.0])
    expected = []
    for row, y in zip(logits, targets):
        p = F.softmax(row, dim=0)
        smooth = torch.full((4,), 0.1 / 3)
        smooth[y] = 0.9
        ce = -(smooth * p.log()).sum()
        expected.append(alpha[y] * (1 - math.exp(-ce.item())) ** 2.0 * ce)
    got = FocalLoss(alpha, gamma=2.0, smoothing=0.1)(logits, targets)
    assert got.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-6)


@pytest.mark.parametrize(
    "epoch, expected",
    [
        (0.0, 1e-3),
        (10.0, 1e-6 + (1e-3 - 1e-6) / 2),  # middle of the first 20-epoch cycle
        (20.0, 1e-3),  # first restart after 20 epochs, not 20 batches
        (20.0 + 20.0, 1e-6 + (1e-3 - 1e-6) / 2),  # middle of the second, 40-epoch cycle
        (60.0 + 80.0 * 0.25, 1e-6 + (1e-3 - 1e-6) * (1 + math.cos(math.pi * 0.25)) / 2),
    ],
)
def test_cosine_restarts_at_fractional_epochs(epoch, expected):
    assert cosine_restarts_lr(epoch, 1e-3, 20, 2, 1e-6) == pytest.approx(expected, rel=1e-9)


def test_schedule_sets_the_lr_from_the_fractional_epoch_each_step():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1e-3)
    schedule = LRSchedule(ScheduleConfig(), optimizer, base_lr=1e-3)
    batches_per_epoch = 55
    for epoch, batch in [(0, 27), (7, 3), (19, 54), (33, 11)]:
        schedule.before_step(epoch + batch / batches_per_epoch)
        assert schedule.current_lr() == pytest.approx(
            cosine_restarts_lr(epoch + batch / batches_per_epoch, 1e-3, 20, 2, 1e-6)
        )
    torch_reference = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3), T_0=20, T_mult=2, eta_min=1e-6
    )
    torch_reference.step(33 + 11 / batches_per_epoch)
    assert schedule.current_lr() == pytest.approx(torch_reference.get_last_lr()[0], rel=1e-9)
