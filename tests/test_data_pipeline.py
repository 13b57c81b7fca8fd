"""Reads, batching, augmentation, TTA and sampling behave as specified and reproducibly."""

import numpy as np
import pytest
import torch

from videns.data import layout
from videns.data.augment import augment, augmentation_rng, subsample_keep, tta_view
from videns.data.collate import pad_collate
from videns.data.dataset import FeatureSplit
from videns.data.loaders import TrainItems, build_train_loader
from videns.data.sampling import EpochBatches, EpochOrder, inverse_frequency_weights


def _batches(split, workers, epoch=3, start=0, bucket=0):
    order = EpochOrder(split.labels, seed=5, weighted=True)
    batches = EpochBatches(order, split.lengths, batch_size=8, bucket_window=bucket)
    batches.set_position(epoch, start)
    loader = build_train_loader(TrainItems(split, seed=5, augment_items=True), batches, workers, pin_memory=False)
    return list(loader)


def _assert_same(a, b):
    assert len(a) == len(b)
    for (fa, la, ya), (fb, lb, yb) in zip(a, b):
        assert torch.equal(fa, fb) and torch.equal(la, lb) and torch.equal(ya, yb)


def test_batches_do_not_depend_on_worker_count(demo_root):
    split = FeatureSplit(layout.split_path(demo_root, "train"))
    assert not split.preloaded  # exercises the lazy per-process h5py handle
    _assert_same(_batches(split, workers=0), _batches(split, workers=2))


def test_preloaded_split_reads_the_same_items(demo_root):
    path = layout.split_path(demo_root, "train")
    lazy, preloaded = FeatureSplit(path), FeatureSplit(path, preload_bytes=1 << 30)
    assert preloaded.preloaded
    for i in (0, 17, len(lazy) - 1):
        assert np.array_equal(lazy[i][0], preloaded[i][0]) and lazy[i][1] == preloaded[i][1]
        assert lazy[i][0].shape[0] == lazy.lengths[i]


def test_resuming_mid_epoch_replays_the_remaining_batches(demo_root):
    split = FeatureSplit(layout.split_path(demo_root, "train"), preload_bytes=1 << 30)
    full = _batches(split, workers=0, bucket=2)
    _assert_same(full[4:], _batches(split, workers=0, start=4, bucket=2))


def test_collate_pads_to_longest_and_returns_lengths():
    items = [(np.ones((3, 2), np.float32), 1), (np.full((5, 2), 2, np.float32), 0)]
    features, lengths, labels = pad_collate(items)
    assert features.shape == (2, 5, 2)
    assert lengths.tolist() == [3, 5] and labels.tolist() == [1, 0]
    assert features[0, 3:].abs().sum() == 0 and features[0, :3].eq(1).all()


def test_augmentation_is_a_function_of_seed_epoch_and_slot():
    x = np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32)
    a = augment(x, augmentation_rng(1, 2, 3))
    assert np.array_equal(a, augment(x, augmentation_rng(1, 2, 3)))
    others = [augment(x, augmentation_rng(1, 2, slot)) for slot in range(20)]
    assert any(o.shape != x.shape or not np.array_equal(o, x) for o in others)


def test_augmentation_bounds_match_the_seed():
    x = np.arange(40 * 2, dtype=np.float32).reshape(40, 2)
    lengths = {augment(x, augmentation_rng(0, 0, s)).shape[0] for s in range(300)}
    assert min(lengths) >= max(int(40 * 0.7), 8) and max(lengths) == 40
    assert len(lengths) > 3  # subsampling happens for about half of the items
    short = np.ones((8, 2), np.float32)
    assert all(augment(short, augmentation_rng(0, 0, s)) is short for s in range(20))


def test_subsample_keep_predicts_the_augmented_length():
    x = np.zeros((60, 2), np.float32)
    for slot in range(200):
        keep = subsample_keep(60, augmentation_rng(4, 1, slot))
        assert augment(x, augmentation_rng(4, 1, slot)).shape[0] == (60 if keep is None else keep)


def test_bucketing_by_augmented_length_pads_equal_length_data_little():
    """All items 73 frames long, as in the reference feature files: subsampling makes them 51-73 long."""
    lengths = np.full(480, 73)
    order = EpochOrder(np.zeros(480, dtype=np.int64), seed=3, weighted=False)
    split = np.zeros((73, 1), np.float32)

    def padding_share(batches: EpochBatches) -> float:
        batches.set_position(2)
        real = [[augment(split, augmentation_rng(3, epoch, slot)).shape[0] for _, epoch, slot in b] for b in batches]
        return 1 - sum(map(sum, real)) / sum(len(b) * max(b) for b in real)

    aware = padding_share(EpochBatches(order, lengths, 48, bucket_window=10, augment_seed=3))
    raw = padding_share(EpochBatches(order, lengths, 48, bucket_window=10))
    assert raw > 0.05 and aware < 0.02


def test_tta_views():
    x = np.arange(20, dtype=np.float32)[:, None]
    assert np.array_equal(tta_view(x, "reverse")[:, 0], x[::-1, 0])
    assert tta_view(x, "speed_up").shape[0] == 10
    assert tta_view(x, "speed_down").shape[0] == 30
    assert tta_view(x, "speed_down")[-1, 0] == 19
    assert np.array_equal(tta_view(x[:10], "speed_up"), x[:10])  # only when T > 10
    assert np.array_equal(tta_view(x[:5], "speed_down"), x[:5])  # only when T > 5
    assert tta_view(x, "none") is x


def test_weighted_sampler_is_seeded_by_seed_and_epoch_and_balances():
    labels = np.array([0] * 80 + [1] * 15 + [2] * 5)
    order = EpochOrder(labels, seed=3, weighted=True)
    assert np.array_equal(order.indices(4), EpochOrder(labels, seed=3, weighted=True).indices(4))
    assert not np.array_equal(order.indices(4), order.indices(5))
    counts = np.bincount(labels[np.concatenate([order.indices(e) for e in range(50)])], minlength=3)
    # clipped weights [0.42->0.5, 2.2, 6.7] times counts [80, 15, 5] -> 40 : 33 : 33
    assert counts[2] / counts.sum() == pytest.approx(33.3 / 106.7, rel=0.1)


def test_unweighted_order_is_a_permutation():
    labels = np.array([0, 1, 1, 2, 2, 2])
    assert sorted(EpochOrder(labels, seed=1, weighted=False).indices(0)) == list(range(6))


def test_inverse_frequency_weights_are_clipped():
    weights = inverse_frequency_weights([1000, 10, 0])  # raw: 0.34, 33.7, inf
    assert weights.tolist() == [0.5, 10.0, 10.0]
    assert inverse_frequency_weights([30, 10]).tolist() == pytest.approx([40 / 60, 2.0])
