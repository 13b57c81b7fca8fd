"""Training augmentation (the reference recipe's) and test-time views (none, reverse, speed_up, speed_down).

Augmentation draws from a generator seeded by (seed, epoch, slot), where slot is
the item's position in the epoch's order, so an item's augmentation does not
depend on the worker that loads it nor on a resume in the middle of an epoch.
"""

from typing import Literal

import numpy as np

TTAMode = Literal["none", "reverse", "speed_up", "speed_down"]
TTA_MODES: tuple[TTAMode, ...] = ("none", "reverse", "speed_up", "speed_down")

# The reference recipe's constants; items this short are left alone.
MIN_FRAMES_TO_AUGMENT = 8
SUBSAMPLE_P, SUBSAMPLE_KEEP = 0.5, (0.7, 1.0)
SHIFT_P, MAX_SHIFT = 0.3, 3
NOISE_P, NOISE_STD = 0.2, 0.01


def augmentation_rng(seed: int, epoch: int, slot: int) -> np.random.Generator:
    """The generator for one item of one epoch."""
    return np.random.default_rng([seed, epoch, slot])


def augment(features: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Temporal subsampling, circular shift and Gaussian noise, as the reference recipe does."""
    num_frames = features.shape[0]
    if num_frames <= MIN_FRAMES_TO_AUGMENT:
        return features
    keep = subsample_keep(num_frames, rng)
    if keep is not None:
        features = features[np.sort(rng.choice(num_frames, size=keep, replace=False))]
    if rng.random() < SHIFT_P:
        shift = int(rng.integers(-MAX_SHIFT, MAX_SHIFT + 1))
        if shift:
            features = np.roll(features, shift, axis=0)
    if rng.random() < NOISE_P:
        features = features + rng.standard_normal(features.shape, dtype=np.float32) * np.float32(NOISE_STD)
    return features


def subsample_keep(num_frames: int, rng: np.random.Generator) -> int | None:
    """The first draws of :func:`augment`: how many frames subsampling keeps, or None when it is skipped."""
    if num_frames <= MIN_FRAMES_TO_AUGMENT or rng.random() >= SUBSAMPLE_P:
        return None
    return max(int(num_frames * rng.uniform(*SUBSAMPLE_KEEP)), MIN_FRAMES_TO_AUGMENT)


def augmented_lengths(lengths: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """Each slot's length after :func:`augment`, for items of ``lengths`` in epoch order, without the items."""
    keeps = (subsample_keep(int(n), augmentation_rng(seed, epoch, slot)) for slot, n in enumerate(lengths))
    return np.array([n if keep is None else keep for n, keep in zip(lengths, keeps)], dtype=np.int64)


def tta_view(features: np.ndarray, mode: TTAMode) -> np.ndarray:
    """One test-time view of an item: flipped in time, or resampled faster or slower."""
    num_frames = features.shape[0]
    if mode == "reverse":
        return features[::-1].copy()
    if mode == "speed_up" and num_frames > 10:
        return features[np.linspace(0, num_frames - 1, num_frames // 2).astype(np.int64)]
    if mode == "speed_down" and num_frames > 5:
        index = np.linspace(0, num_frames - 1, int(1.5 * num_frames)).astype(np.int64)
        return features[np.clip(index, 0, num_frames - 1)]
    return features
