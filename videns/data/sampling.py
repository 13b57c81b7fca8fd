"""Deterministic epoch orders and batches, so a resumed epoch replays exactly.

Everything here is a pure function of (seed, epoch): there is no sampler state
to save beyond the epoch number and how many batches were already consumed.
"""

from collections.abc import Iterator
from typing import Literal

import numpy as np

from videns.data.augment import augmented_lengths

Balance = Literal["none", "weighted_sampler", "oversample", "smote"]

# Distinct stream ids keep the order and the bucketing draws independent.
_ORDER_STREAM, _BUCKET_STREAM = 1, 2
WEIGHT_CLIP = (0.5, 10.0)


def inverse_frequency_weights(class_counts, clip: tuple[float, float] = WEIGHT_CLIP) -> np.ndarray:
    """Per-class weights total / (C * count), clipped to ``WEIGHT_CLIP``; absent classes get the maximum."""
    counts = np.asarray(class_counts, dtype=np.float64)
    with np.errstate(divide="ignore"):
        weights = counts.sum() / (len(counts) * counts)
    return np.clip(weights, *clip)


class EpochOrder:
    """The item indices one epoch visits, in order."""

    def __init__(self, labels: np.ndarray, seed: int, weighted: bool, base_indices: np.ndarray | None = None):
        """``base_indices`` replaces the plain item list (e.g. an oversampled one) before shuffling."""
        self.labels = np.asarray(labels)
        self.seed = seed
        self.base = np.arange(len(labels)) if base_indices is None else np.asarray(base_indices)
        self.item_probs = None
        if weighted:
            class_weights = inverse_frequency_weights(np.bincount(self.labels[self.base]))
            item_weights = class_weights[self.labels[self.base]]
            self.item_probs = item_weights / item_weights.sum()

    def __len__(self) -> int:
        return len(self.base)

    def indices(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch, _ORDER_STREAM])
        if self.item_probs is not None:
            return self.base[rng.choice(len(self.base), size=len(self.base), replace=True, p=self.item_probs)]
        return self.base[rng.permutation(len(self.base))]


class EpochBatches:
    """Batches of (index, epoch, slot) keys, usable as a DataLoader ``batch_sampler``.

    ``slot`` is the item's position in the epoch's order; it seeds augmentation.
    With ``bucket_window`` > 0, items are sorted by length inside windows of that
    many batches and the window's batches are shuffled, so batches pad little
    while the order stays a pure function of (seed, epoch). With
    ``augment_seed``, the length sorted by is the one the item will have after
    augmentation (its subsampling is a pure function of (seed, epoch, slot)):
    otherwise, on equal-length data, subsampling would leave every batch padded
    to the full length.
    """

    def __init__(
        self,
        order: EpochOrder,
        lengths: np.ndarray,
        batch_size: int,
        bucket_window: int = 0,
        augment_seed: int | None = None,
    ):
        self.order = order
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.bucket_window = bucket_window
        self.augment_seed = augment_seed
        self.epoch = 0
        self.start_batch = 0

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        """Where the next iteration starts: skip the batches an interrupted run consumed."""
        self.epoch, self.start_batch = epoch, start_batch

    def batches_per_epoch(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def slot_batches(self, epoch: int) -> list[np.ndarray]:
        """The epoch's batches as arrays of slots (positions in the epoch's order)."""
        slots = np.arange(len(self.order))
        if self.bucket_window <= 0:
            return [slots[i : i + self.batch_size] for i in range(0, len(slots), self.batch_size)]
        lengths = self.lengths[self.order.indices(epoch)]  # by slot
        if self.augment_seed is not None:
            lengths = augmented_lengths(lengths, self.augment_seed, epoch)
        rng = np.random.default_rng([self.order.seed, epoch, _BUCKET_STREAM])
        window = self.bucket_window * self.batch_size
        batches = []
        for start in range(0, len(slots), window):
            chunk = slots[start : start + window]
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
            window_batches = [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
            batches.extend(window_batches[i] for i in rng.permutation(len(window_batches)))
        return batches

    def __len__(self) -> int:
        return self.batches_per_epoch() - self.start_batch

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        epoch = self.epoch
        indices = self.order.indices(epoch)
        for slots in self.slot_batches(epoch)[self.start_batch :]:
            yield [(int(indices[s]), epoch, int(s)) for s in slots]
