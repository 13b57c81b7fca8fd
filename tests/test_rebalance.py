"""Class rebalancing: exact per-class counts, determinism by seed, SMOTE's contract."""

import logging

import numpy as np
import pytest

from videns.data.config import DataConfig
from videns.data.rebalance import oversample_indices, smote_resample
from videns.errors import ConfigError, DataError

# an MIT-BIH-like imbalance: one big class, a few small ones
LABELS = np.repeat(np.arange(5), [200, 30, 60, 8, 40])


def test_oversample_gives_every_class_the_majority_count_by_default():
    idx = oversample_indices(LABELS, None, seed=0)
    assert np.bincount(LABELS[idx]).tolist() == [200] * 5


def test_oversample_gives_every_class_the_target_count():
    idx = oversample_indices(LABELS, 50, seed=0)
    assert np.bincount(LABELS[idx]).tolist() == [50] * 5


def test_oversample_is_deterministic_by_seed():
    a, b, c = (oversample_indices(LABELS, 50, seed=s) for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_oversample_downsamples_without_replacement():
    idx = oversample_indices(LABELS, 50, seed=0)
    big = idx[LABELS[idx] == 0]
    assert len(np.unique(big)) == 50  # no item drawn twice


def test_oversample_keeps_every_minority_item():
    idx = oversample_indices(LABELS, 50, seed=0)
    assert set(idx[LABELS[idx] == 3]) == set(np.flatnonzero(LABELS == 3))


def test_oversample_order_is_shuffled():
    idx = oversample_indices(LABELS, 50, seed=0)
    assert not (np.diff(LABELS[idx]) >= 0).all()  # not grouped by class


def test_oversample_rejects_a_bad_target():
    with pytest.raises(ConfigError, match="target_count"):
        oversample_indices(LABELS, 0, seed=0)


@pytest.mark.parametrize("spec, per_class", [("majority", None), ("2x majority", 2), ("0.5x majority", 0.5)])
def test_oversample_target_relative_to_the_majority(spec, per_class):
    majority = int(np.bincount(LABELS).max())
    idx = oversample_indices(LABELS, spec, seed=0)
    expected = majority if per_class is None else round(per_class * majority)
    assert (np.bincount(LABELS[idx]) == expected).all()


@pytest.mark.parametrize("spec", [0, -3, "minority", "x majority", "0x majority", True])
def test_data_config_names_the_key_of_a_bad_target(spec):
    with pytest.raises(ConfigError, match=r"data\.oversample_target .*got"):
        DataConfig(oversample_target=spec)


def test_growth_past_ten_times_logs_one_line_with_both_counts(caplog):
    labels = np.repeat([0, 1], [30, 20])  # 50 items
    with caplog.at_level(logging.INFO, logger="videns.data.rebalance"):
        oversample_indices(labels, 300, seed=0)  # 600 items: 12x
        oversample_indices(labels, 240, seed=0)  # 480 items: 9.6x, says nothing
        oversample_indices(labels, "majority", seed=0)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "50 -> 600" in lines[0], lines


def test_smote_growth_past_ten_times_logs_one_line(caplog):
    labels = np.repeat([0, 1, 2], [240, 6, 6])  # 252 items -> 720
    features, lengths = fixed_length_items(labels)
    with caplog.at_level(logging.INFO, logger="videns.data.rebalance"):
        smote_resample(features, lengths, labels, seed=0)
    assert [r.getMessage() for r in caplog.records] == []  # 2.9x
    labels = np.repeat(np.arange(14), [240] + [6] * 13)  # 318 items -> 3360: 10.6x
    features, lengths = fixed_length_items(labels)
    with caplog.at_level(logging.INFO, logger="videns.data.rebalance"):
        smote_resample(features, lengths, labels, seed=0)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "318 -> 3360" in lines[0], lines


def fixed_length_items(labels, length=12, dim=2, seed=0):
    rng = np.random.default_rng(seed)
    features = (rng.standard_normal((len(labels), length, dim)) + labels[:, None, None]).astype(np.float32)
    return features, np.full(len(labels), length, dtype=np.int64)


def test_smote_brings_every_class_to_the_majority_count():
    features, lengths = fixed_length_items(LABELS)
    new_features, new_lengths, new_labels = smote_resample(features, lengths, LABELS, seed=0)
    assert np.bincount(new_labels).tolist() == [200] * 5
    assert new_features.shape == (1000, 12, 2) and new_features.dtype == np.float32
    assert (new_lengths == 12).all() and len(new_lengths) == 1000


def test_smote_keeps_the_originals_first_and_unchanged():
    features, lengths = fixed_length_items(LABELS)
    new_features, _, new_labels = smote_resample(features, lengths, LABELS, seed=0)
    np.testing.assert_array_equal(new_features[: len(LABELS)], features)
    np.testing.assert_array_equal(new_labels[: len(LABELS)], LABELS)


def test_smote_is_deterministic_by_seed():
    features, lengths = fixed_length_items(LABELS)
    a, b, c = (smote_resample(features, lengths, LABELS, seed=s)[0] for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_smote_refuses_variable_length_items():
    features, lengths = fixed_length_items(LABELS)
    lengths[:3] = [5, 7, 7]
    with pytest.raises(DataError, match="smote needs fixed-length items; 3 distinct lengths found"):
        smote_resample(features, lengths, LABELS, seed=0)


def test_smote_refuses_a_class_too_small_for_its_neighbours():
    labels = np.repeat(np.arange(2), [20, 3])
    features, lengths = fixed_length_items(labels)
    with pytest.raises(DataError, match="class 1 has 3"):
        smote_resample(features, lengths, labels, seed=0)
