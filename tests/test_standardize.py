"""Inputs the models can see: per-feature standardisation saved with the weights, and a projection that keeps
magnitude."""

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from tests.conftest import tiny_member_args
from videns.config import parse_member_config
from videns.data import layout
from videns.data.dataset import ArraySplit, FeatureSplit
from videns.data.statistics import feature_statistics
from videns.ensemble.members import load_member
from videns.folders import MemberFolder
from videns.member.checkpoint import load_best
from videns.member.train import train_member
from videns.models.standardize import InputStandardizer, standardizer_of
from videns.models.temporal import TemporalAttentionClassifier


def real_frames(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        features, lengths = f[layout.FEATURES][()], f[layout.NUM_FRAMES][()]
    return np.concatenate([features[i, :n] for i, n in enumerate(lengths)]).astype(np.float64)


@pytest.mark.parametrize("preload", [True, False])
def test_statistics_cover_real_frames_only(demo_root, preload):
    path = layout.split_path(demo_root, "train")
    split = FeatureSplit(path, preload_bytes=1 << 40 if preload else 0)
    mean, std = feature_statistics(split)
    frames = real_frames(path)
    np.testing.assert_allclose(mean, frames.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(std, frames.std(axis=0), rtol=1e-9)
    padded_mean = split.preloaded_features.mean(axis=(0, 1)) if preload else None
    if preload:  # the demo pads to 73 frames: counting padding would pull every mean towards 0
        assert not np.allclose(mean, padded_mean, atol=1e-3)


def test_statistics_keep_a_small_spread_on_a_large_offset():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 40, size=3000)
    features = np.zeros((3000, 40, 2), dtype=np.float32)
    for i, n in enumerate(lengths):
        features[i, :n, 0] = 1e4 + rng.standard_normal(n)  # float32 holds 1e4 + x to about 1e-3
        features[i, :n, 1] = rng.standard_normal(n)
    mean, std = feature_statistics(ArraySplit(features, lengths, np.zeros(3000)))
    frames = np.concatenate([features[i, :n] for i, n in enumerate(lengths)]).astype(np.float64)
    np.testing.assert_allclose(std, frames.std(axis=0), rtol=1e-6)
    assert abs(std[0] - 1.0) < 0.05


def test_standardizer_zeroes_padding_and_leaves_flat_features_alone():
    standardizer = InputStandardizer(2)
    standardizer.set_statistics(np.array([1.0, 5.0]), np.array([2.0, 0.0]))
    x = torch.tensor([[[3.0, 5.0], [1.0, 6.0], [9.0, 9.0]]])  # (1, 3, 2), third frame is padding
    out = standardizer(x, torch.tensor([2]))
    torch.testing.assert_close(out, torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]]))


def test_a_member_saves_its_statistics_and_the_ensemble_applies_them(demo_root, tmp_path):
    out = tmp_path / "run" / "members" / "seed_7"
    cfg = parse_member_config(
        tiny_member_args(demo_root, out, "--trainer.max_epochs", "1", "--model.init_args.standardize", "true")
    )
    assert train_member(cfg).status == "finished"
    mean, std = feature_statistics(FeatureSplit(layout.split_path(demo_root, "train")))
    tensors, _, _ = load_best(MemberFolder(out))
    np.testing.assert_allclose(tensors["standardizer.mean"].numpy(), mean, rtol=1e-6)
    np.testing.assert_allclose(tensors["standardizer.std"].numpy(), std, rtol=1e-6)
    member = load_member(tmp_path / "run", 7)  # what ensemble_eval and predict rebuild
    rebuilt = standardizer_of(member.model)
    assert rebuilt is not None
    np.testing.assert_allclose(rebuilt.mean.numpy(), mean, rtol=1e-6)


# Raw sensor units: at this scale the projection's weight term swamps its bias, and a LayerNorm after
# it leaves each step's sign only (measured: the "layer" projection stays at chance, 0.33, here).
RAW_SCALE = 300.0


def amplitude_series(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Univariate series whose class is their amplitude alone: sines of random phase and length, amplitude
    0.5/1/2 times RAW_SCALE."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 3
    lengths = torch.randint(20, 41, (count,), generator=g)
    x = torch.zeros(count, 40, 1)
    for i in range(count):
        steps = torch.arange(int(lengths[i]), dtype=torch.float32)
        phase = float(torch.rand(1, generator=g)) * 6.283
        x[i, : lengths[i], 0] = RAW_SCALE * (0.5, 1.0, 2.0)[int(labels[i])] * torch.sin(0.4 * steps + phase)
    return x, lengths, labels


def held_out_accuracy(model: torch.nn.Module, steps: int = 100) -> float:
    torch.manual_seed(0)
    x, lengths, labels = amplitude_series(96, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x, lengths), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        held_out, held_lengths, held_labels = amplitude_series(96, seed=2)
        return float((model(held_out, held_lengths).argmax(1) == held_labels).float().mean())


def small_temporal(**kwargs) -> TemporalAttentionClassifier:
    torch.manual_seed(0)
    return TemporalAttentionClassifier(
        1, 3, hidden_dim=16, num_lstm_layers=1, num_attention_heads=2, dropout=0.0, head_dims=(16,), **kwargs
    )


@pytest.mark.usefixtures("one_thread")
def test_the_temporal_model_learns_a_class_carried_by_amplitude_alone():
    assert held_out_accuracy(small_temporal()) >= 0.9


@pytest.mark.usefixtures("one_thread")
def test_standardised_inputs_are_learned_even_with_the_reference_projection():
    model = small_temporal(projection_norm="layer", standardize=True)
    x, lengths, labels = amplitude_series(96, seed=1)
    model.standardizer.set_statistics(*feature_statistics(ArraySplit(x.numpy(), lengths.numpy(), labels.numpy())))
    assert held_out_accuracy(model) >= 0.9


@pytest.mark.usefixtures("one_thread")
def test_a_layer_norm_after_a_one_dimensional_projection_sees_only_the_sign():
    """Why "auto" drops the norm at small D: with it, amplitudes 0.5 and 2 of one sign look alike."""
    projection = small_temporal(projection_norm="layer").input_projection.eval()
    out = projection(torch.tensor([[0.5], [2.0], [-0.3]]))
    assert torch.allclose(out[0], out[1], atol=1e-3) and not torch.allclose(out[0], out[2], atol=1e-1)
    kept = small_temporal().input_projection.eval()(torch.tensor([[0.5], [2.0]]))
    assert not torch.allclose(kept[0], kept[1], atol=1e-1)


def test_the_reference_width_keeps_its_layer_norm():
    with torch.device("meta"):
        model = TemporalAttentionClassifier(1280, 10)
    assert isinstance(model.input_projection[1], torch.nn.LayerNorm)
    assert model.standardizer is None
