"""The shape baseline reads order in time, ignores padding, repeats itself, and knows what it can afford."""

from pathlib import Path

import numpy as np
import pytest

from videns.data import layout
from videns.data.demo import write_split as write_split_file
from videns.ensemble import baseline, shape_baseline

pytestmark = pytest.mark.usefixtures("module_on_one_thread")  # tiny tensors: two spin-waiting threads only thrash

CLASS_NAMES = layout.VIDEO_CLASS_NAMES  # the writer's mapping; only classes 0 and 1 occur


def _sawtooths(rng: np.random.Generator, count: int, padding: float = 0.0) -> tuple[np.ndarray, ...]:
    """Class 0: slow rise, sharp drop; class 1: the same reversed in time. Channel 1 is noise.

    Reversal keeps every item's set of values, and each item is standardised to
    mean 0, std 1 over its real frames, so only order in time tells the classes apart.
    """
    labels = np.arange(count) % 2
    lengths = rng.integers(60, 101, size=count)
    features = np.full((count, int(lengths.max()), 2), padding, dtype=np.float32)
    for i, (label, length) in enumerate(zip(labels, lengths, strict=True)):
        phase = (np.arange(length) + rng.uniform(0, 30)) / rng.uniform(15, 30) % 1.0
        series = np.stack([phase if label == 0 else 1.0 - phase, np.zeros(length)], axis=1)
        series += rng.normal(0.0, 0.15, size=series.shape)
        features[i, :length] = (series - series.mean(axis=0)) / series.std(axis=0)
    return features, labels, lengths


def _write(path: Path, features: np.ndarray, labels: np.ndarray, lengths: np.ndarray) -> Path:
    return write_split_file(path, features, labels, lengths)


@pytest.fixture(scope="module")
def sawtooth_files(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sawtooth")
    rng = np.random.default_rng(1)
    return (
        _write(layout.split_path(root, "train"), *_sawtooths(rng, 80)),
        _write(layout.split_path(root, "test"), *_sawtooths(rng, 60)),
    )


def test_shape_baseline_reads_order_that_mean_and_std_cannot(sawtooth_files):
    train, test = sawtooth_files
    shape = shape_baseline.fit_and_score(train, test, CLASS_NAMES)
    summary = baseline.fit_and_score(train, test, CLASS_NAMES)
    assert shape["accuracy"] >= 0.9
    assert summary["accuracy"] <= 0.7
    assert shape["model"] == shape_baseline.MODEL_NAME
    assert shape["num_features"] == shape_baseline.num_features_for(100) == 9996
    assert (shape["train_items"], shape["train_items_in_file"]) == (80, 80)
    assert shape["nll"] is None and shape["ece"] is None
    assert set(shape["per_class"]) == set(CLASS_NAMES)  # absent classes 2 and 3 do not crash the mapping


def test_features_ignore_padding_values_and_width(tmp_path, sawtooth_files):
    features, labels, lengths = _sawtooths(np.random.default_rng(2), 12)
    assert lengths.min() < lengths.max()
    # Garbage beyond each item's num_frames, and 40 more padded frames than any item needs.
    garbage = np.random.default_rng(3).normal(0.0, 1e3, size=(12, features.shape[1] + 40, 2)).astype(np.float32)
    garbage[np.argmin(lengths), -1, 0] = np.nan
    for i, length in enumerate(lengths):
        garbage[i, :length] = features[i, :length]
    transform = shape_baseline.fit_transform(sawtooth_files[0], np.arange(80))
    clean, _ = shape_baseline.shape_features(_write(tmp_path / "clean.h5", features, labels, lengths), transform)
    dirty, _ = shape_baseline.shape_features(_write(tmp_path / "garbage.h5", garbage, labels, lengths), transform)
    np.testing.assert_array_equal(clean, dirty)


def test_two_fits_predict_the_same(sawtooth_files):
    train, test = sawtooth_files
    _, first, _, _ = shape_baseline.fit_and_predict(train, test, cap=50)
    _, second, _, _ = shape_baseline.fit_and_predict(train, test, cap=50)
    np.testing.assert_array_equal(first, second)


def test_budget_admits_small_sets_and_refuses_huge_ones():
    assert shape_baseline.fits_budget(270, 29, 12)
    assert not shape_baseline.fits_budget(100_000, 1000, 1024)
    assert shape_baseline.estimated_seconds(200, 427, 1) < shape_baseline.estimated_seconds(2000, 427, 1)
