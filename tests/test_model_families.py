"""FCN and InceptionTime: shapes, padding invariance, masked batch norm, learning, bf16, rebuild, resume."""

import inspect
import json
import signal

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import run_module, start_module
from tests.support.member_files import (
    assert_members_identical,
    checkpoint_state,
    latest_checkpoint,
)
from tests.test_resume import wait_for_step
from videns.config import parse_member_config
from videns.errors import ConfigError
from videns.models.class_path import build_model
from videns.models.fcn import FCNClassifier
from videns.models.inception import InceptionTimeClassifier, branch_kernel_sizes
from videns.models.masked import MaskedBatchNorm1d
from videns.models.standardize import InputStandardizer

# small settings so that every in-process test runs in about a second on one CPU thread
SMALL = {
    "fcn": (FCNClassifier, {"channels": (8, 16, 8), "kernel_sizes": (8, 5, 3)}),
    # depth 4: one shortcut around modules 0-2, and a module after it without one
    "inception": (InceptionTimeClassifier, {"filters": 4, "depth": 4, "kernel_size": 12, "bottleneck": 4}),
}
CLASS_PATHS = {"fcn": "videns.models.FCNClassifier", "inception": "videns.models.inception.InceptionTimeClassifier"}

pytestmark = pytest.mark.usefixtures("one_thread")


def build(name, feature_dim=1, num_classes=3, **overrides):
    cls, hparams = SMALL[name]
    return cls(feature_dim, num_classes, **(hparams | overrides))


def padded_batch(lengths, feature_dim, total_len=None, seed=0, pad_value=0.0):
    """(x (B, total_len, D) filled with ``pad_value`` past each length, lengths (B,))."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((len(lengths), total_len or max(lengths), feature_dim), pad_value)
    for i, n in enumerate(lengths):
        x[i, :n] = torch.randn(n, feature_dim, generator=g)
    return x, torch.tensor(lengths, dtype=torch.int64)


def shapes_dataset(count=60, seed=0):
    """Sine, square and sawtooth waves (classes 0, 1, 2) of random period, phase, amplitude and length.

    Returns (x (N, 80, 1) zero-padded, lengths (N,), labels (N,)).
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 3
    lengths = rng.integers(40, 81, size=count)
    x = np.zeros((count, 80, 1), dtype=np.float32)
    for i, (label, n) in enumerate(zip(labels, lengths)):
        cycles = np.arange(n) / rng.uniform(10, 20) + rng.uniform()  # (n,)
        wave = (np.sin(2 * np.pi * cycles), np.sign(np.sin(2 * np.pi * cycles)), 2 * (cycles % 1) - 1)[label]
        x[i, :n, 0] = rng.uniform(0.5, 2.0) * wave + 0.1 * rng.standard_normal(n) + 3.0
    return torch.from_numpy(x), torch.from_numpy(lengths).long(), torch.from_numpy(labels).long()


def warm_up_batch_norm(model, feature_dim):
    """A few training-mode passes on shifted, scaled data, so the running statistics are not the identity."""
    x, lengths = padded_batch([40, 33, 20], feature_dim, seed=1)
    with torch.no_grad():
        for _ in range(5):
            model(3 * x + 1, lengths)


@pytest.mark.parametrize("feature_dim", [1, 3])
@pytest.mark.parametrize("name", SMALL)
def test_forward_shape(name, feature_dim):
    model = build(name, feature_dim=feature_dim, num_classes=5)
    x, lengths = padded_batch([60, 37, 1], feature_dim)
    assert model(x, lengths).shape == (3, 5)


@pytest.mark.parametrize("standardize", [True, False])
@pytest.mark.parametrize("feature_dim", [1, 3])
@pytest.mark.parametrize("name", SMALL)
def test_padding_invariance_in_eval(name, feature_dim, standardize):
    torch.manual_seed(0)
    model = build(name, feature_dim=feature_dim, dropout=0.2, standardize=standardize)
    if standardize:
        model.standardizer.set_statistics(np.linspace(-1.0, 2.0, feature_dim), np.linspace(0.5, 3.0, feature_dim))
    warm_up_batch_norm(model, feature_dim)
    model.eval()
    lengths_list = [40, 17, 1, 2, 31, 8]  # odd, even and length-1 items
    # longer than the longest item, and garbage past each end: neither may reach a real step
    x, lengths = padded_batch(lengths_list, feature_dim, total_len=47, seed=2, pad_value=5.0)
    with torch.no_grad():
        batched = model(x, lengths)
        for i, n in enumerate(lengths_list):
            alone = model(x[i : i + 1, :n], lengths[i : i + 1])
            torch.testing.assert_close(alone[0], batched[i], atol=1e-5, rtol=0)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_masked_batch_norm_trains_on_real_steps_only(momentum):
    """Outputs, gradients and running statistics equal BatchNorm1d's over the real steps alone."""
    torch.manual_seed(0)
    masked_bn, plain_bn = MaskedBatchNorm1d(4, momentum=momentum), nn.BatchNorm1d(4, momentum=momentum)
    with torch.no_grad():
        for bn in (masked_bn, plain_bn):
            bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0]))
            bn.bias.copy_(torch.tensor([0.0, 1.0, -2.0, 3.0]))
    lengths = [9, 3, 6]
    for step in range(2):
        x = (torch.randn(3, 4, 9) * 2 + 5).requires_grad_()  # (B, C, T)
        valid = (torch.arange(9)[None, :] < torch.tensor(lengths)[:, None]).unsqueeze(1)  # (B, 1, T)
        with torch.no_grad():
            x.masked_fill_(~valid, 100.0)  # padding far from the data would pull any statistic it entered
        real = torch.cat([x[i, :, :n] for i, n in enumerate(lengths)], dim=1)[None]  # (1, C, 18)
        out, expected = masked_bn(x, valid), plain_bn(real)
        torch.testing.assert_close(torch.cat([out[i, :, :n] for i, n in enumerate(lengths)], dim=1)[None], expected)
        assert out.masked_select(~valid).eq(0).all()
        torch.testing.assert_close(masked_bn.running_mean, plain_bn.running_mean)
        torch.testing.assert_close(masked_bn.running_var, plain_bn.running_var)
        assert masked_bn.num_batches_tracked == plain_bn.num_batches_tracked == step + 1
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad.masked_select(~valid).eq(0).all()
    assert masked_bn.state_dict().keys() == plain_bn.state_dict().keys()


def test_masked_batch_norm_in_eval_uses_the_running_statistics():
    bn = MaskedBatchNorm1d(3)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, -1.0, 0.0]))
        bn.running_var.copy_(torch.tensor([4.0, 1.0, 0.25]))
    bn.eval()
    x, valid = torch.randn(2, 3, 5), torch.tensor([[True] * 5, [True] * 2 + [False] * 3]).unsqueeze(1)
    expected = nn.functional.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps) * valid
    torch.testing.assert_close(bn(x, valid), expected)


def test_masked_batch_norm_statistics_are_float32_under_bf16_autocast():
    torch.manual_seed(0)
    bn = MaskedBatchNorm1d(2)
    x = (torch.randn(4, 2, 300) * 3 + 100.0).bfloat16()  # (B, C, T): bf16 keeps 2-3 digits of a mean near 100
    valid = torch.ones(4, 1, 300, dtype=torch.bool)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = bn(x, valid)
    exact = x.float()
    assert out.dtype == torch.bfloat16 and bn.running_mean.dtype == torch.float32
    torch.testing.assert_close(bn.running_mean, 0.9 * 0 + 0.1 * exact.mean(dim=(0, 2)))
    torch.testing.assert_close(bn.running_var, 0.9 * 1 + 0.1 * exact.var(dim=(0, 2)))


@pytest.mark.parametrize("name", SMALL)
def test_trains_under_bf16_autocast(name):
    torch.manual_seed(0)
    model = build(name, feature_dim=3)
    x, lengths = padded_batch([30, 12, 25], 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x, lengths)
    logits.float().sum().backward()
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x, lengths).float()
    with torch.no_grad():
        torch.testing.assert_close(low, model(x, lengths), atol=0.1, rtol=0.05)


@pytest.mark.parametrize("name", SMALL)
def test_standardizer_is_applied_first(name):
    """With statistics (m, s), the model on x equals the same weights without a standardizer on (x - m) / s."""
    torch.manual_seed(0)
    model = build(name, feature_dim=2).eval()
    assert isinstance(model.standardizer, InputStandardizer)
    mean, std = np.array([1.0, -2.0]), np.array([0.5, 4.0])
    model.standardizer.set_statistics(mean, std)
    plain = build(name, feature_dim=2, standardize=False).eval()
    assert plain.standardizer is None
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("standardizer.")})
    x, lengths = padded_batch([20, 11], 2)
    standardized = (x - torch.tensor(mean).float()) / torch.tensor(std).float()
    with torch.no_grad():
        torch.testing.assert_close(model(x, lengths), plain(standardized, lengths))


@pytest.mark.parametrize("name", SMALL)
def test_learns_class_from_wave_shape(name):
    torch.manual_seed(0)
    x, lengths, labels = shapes_dataset()
    model = build(name)
    real = x[torch.arange(80)[None, :] < lengths[:, None]]  # (steps, 1)
    model.standardizer.set_statistics(real.mean(0).numpy(), real.std(0).numpy())
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        loss = nn.functional.cross_entropy(model(x, lengths), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        accuracy = (model.eval()(x, lengths).argmax(1) == labels).float().mean().item()
    assert accuracy >= 0.9, accuracy


def test_inception_branch_kernels_are_odd():
    assert branch_kernel_sizes(40) == (39, 19, 9)
    assert branch_kernel_sizes(4) == (3, 1, 1)


def test_inception_skips_the_bottleneck_on_one_channel():
    model = InceptionTimeClassifier(1, 2, filters=4, depth=3, kernel_size=8, bottleneck=4)
    assert model.blocks[0].bottleneck is None and model.blocks[1].bottleneck is not None
    assert len(InceptionTimeClassifier(3, 2, depth=3, residual=False).shortcuts) == 0


@pytest.mark.parametrize(
    "cls, hparams, field",
    [
        (FCNClassifier, {"channels": ()}, "model.channels"),
        (FCNClassifier, {"channels": (8, 0), "kernel_sizes": (3, 3)}, "model.channels"),
        (FCNClassifier, {"kernel_sizes": (8, 5)}, "model.kernel_sizes"),
        (FCNClassifier, {"kernel_sizes": (8, 0, 3)}, "model.kernel_sizes"),
        (FCNClassifier, {"dropout": 1.0}, "model.dropout"),
        (InceptionTimeClassifier, {"filters": 0}, "model.filters"),
        (InceptionTimeClassifier, {"depth": 0}, "model.depth"),
        (InceptionTimeClassifier, {"kernel_size": 3}, "model.kernel_size"),
        (InceptionTimeClassifier, {"bottleneck": -1}, "model.bottleneck"),
        (InceptionTimeClassifier, {"dropout": -0.1}, "model.dropout"),
    ],
)
def test_bad_hparams_raise_config_error_naming_the_field(cls, hparams, field):
    with pytest.raises(ConfigError, match=field):
        cls(1, 5, **hparams)


@pytest.mark.parametrize("cls", [FCNClassifier, InceptionTimeClassifier])
def test_every_hparam_has_a_docstring_entry(cls):
    doc = inspect.getdoc(cls.__init__)
    for name in inspect.signature(cls).parameters:
        assert f"\n    {name}: " in doc, name


def model_args(name: str) -> list[str]:
    """Command-line model options for a tiny ``name``; every init arg given, as the default model's would carry over."""
    init_args = SMALL[name][1] | {"dropout": 0.1, "standardize": True}
    return [
        "--model.class_path",
        CLASS_PATHS[name],
        *(
            arg
            for key, value in init_args.items()
            for arg in (f"--model.init_args.{key}", json.dumps(list(value) if isinstance(value, tuple) else value))
        ),
    ]


@pytest.mark.parametrize("name", SMALL)
def test_the_checkpointed_spec_rebuilds_the_model(name, demo_root, tmp_path):
    """``build_model`` on the spec a checkpoint stores (JSON: lists, not tuples) takes the trained weights."""
    torch.manual_seed(0)
    cfg = parse_member_config(["--data.root", str(demo_root), "--out_dir", str(tmp_path / "m"), *model_args(name)])
    spec = json.loads(json.dumps(cfg.model_spec))
    assert spec["init_args"]["standardize"] is True and spec["init_args"]["dropout"] == 0.1
    trained = cfg.model(3, 4)
    trained.standardizer.set_statistics(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 0.5]))
    warm_up_batch_norm(trained, 3)
    rebuilt = build_model(spec, 3, 4)
    assert type(rebuilt) is type(trained)
    rebuilt.load_state_dict(trained.state_dict())
    x, lengths = padded_batch([20, 9], 3)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x, lengths), trained.eval()(x, lengths))


def fcn_member_args(root, out, *extra: str) -> list[str]:
    # 144 train items in batches of 8: 18 batches per epoch, so a signal lands mid-epoch
    return [
        "--data.root",
        str(root),
        "--out_dir",
        str(out),
        "--seed",
        "7",
        *model_args("fcn"),
        "--trainer.batch_size",
        "8",
        "--trainer.max_epochs",
        "2",
        "--trainer.progress",
        "off",
        "--optimizer.lr",
        "3e-3",
        "--schedule.t0_epochs",
        "2",
        *extra,
    ]


@pytest.mark.slow  # three short members in subprocesses: about 25 s
def test_fcn_member_sigterm_mid_epoch_then_restart_is_bit_identical(demo_root, tmp_path):
    reference = tmp_path / "reference"
    result = run_module("jobs.train", fcn_member_args(demo_root, reference, "--checkpoint.every_minutes", "0"))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "member"
    proc = start_module("jobs.train", fcn_member_args(demo_root, out, "--checkpoint.every_steps", "1"))
    wait_for_step(proc, out, 5)  # then it stops at the end of the step it is in, and saves
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, output
    state = checkpoint_state(latest_checkpoint(out))["training"]
    assert 0 < state["batches_done"] < 18 and state["epoch"] == 0, "the stop should land mid-epoch"
    resumed = run_module("jobs.train", fcn_member_args(demo_root, out))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming seed 7" in resumed.stderr
    assert_members_identical(out, reference)
