"""A shape-aware sanity baseline: ridge regression on MiniRocket-style random convolution features.

The mean/std baseline (``baseline.py``) sees no order in time; this one does, at
CPU cost, so an ensemble of temporal models that does not beat it is not
earning its cost on data whose classes differ in *shape*.

The transform follows MiniRocket (Dempster, Schmidt and Webb, "MINIROCKET: A
Very Fast (Almost) Deterministic Transform for Time Series Classification",
KDD 2021), reimplemented in torch because sktime/aeon need numba:

- 84 fixed kernels of length 9: every choice of 3 of the 9 taps gets weight 2,
  the other 6 get -1 (each kernel sums to 0, so it answers to shape, not level).
- Dilations exponentially spaced from 1 to (T-1)/8, T the longest real train
  item, at most ``MAX_DILATIONS`` of them, each weighted by how often the
  rounded spacing hits it, as MiniRocket does.
- Multivariate as in MiniRocket's multivariate variant: each (kernel, dilation)
  sums its convolution over a seeded random subset of 1..9 channels. Done here
  as one ``conv1d`` per dilation with an (84, D, 9) weight, kernel times mask.
- Biases: quantiles (a golden-ratio low-discrepancy sequence) of each (kernel,
  dilation)'s output on a seeded random train item.
- Features: PPV, the proportion of an item's *real* frames where the output
  exceeds the bias. Padding is zeroed before convolving and excluded after, so
  an item's features do not depend on what lies beyond its num_frames.

Deviations from MiniRocket: only 'same' zero padding (MiniRocket alternates it
with unpadded outputs), and bias items are drawn from a small seeded sample of
train items rather than the whole train set, so fitting reads little.

Fitted on train (at most MAX_TRAIN_ITEMS items, the seeded draw of
``baseline.train_indices``: fewer than the mean/std baseline takes, see
MAX_TRAIN_ITEMS), scored on test.
"""

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from sklearn.linear_model import RidgeClassifierCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from videns.data import layout
from videns.ensemble.baseline import train_indices
from videns.metrics import classification_metrics

log = logging.getLogger(__name__)

MODEL_NAME = "ridge on MiniRocket-style random convolution features"
# The ridge over ~10k features dominates the cost beyond a few thousand items (4,000 items of 100 x 32
# were estimated at 258 s); a seeded draw of this many keeps the baseline within its minute.
MAX_TRAIN_ITEMS = 2_000
SEED = 0
KERNEL_LENGTH = 9
NUM_KERNELS = 84  # C(9, 3)
NUM_FEATURES = 10_000  # MiniRocket's default; rounds down to a multiple of NUM_KERNELS (9996)
MAX_DILATIONS = 32  # MiniRocket's cap on dilations per kernel
BIAS_ITEMS = 32  # train items the biases are drawn from: bounds fitting reads
RIDGE_ALPHAS = np.logspace(-3, 3, 10)
_BLOCK_ITEMS = 256  # items transformed at once: bounds memory on large splits
_BLOCK_VALUES = 2**25  # and at most this many floats per (B, channels, T) tensor: 128 MiB
# Assumed CPU rates for estimated_seconds, from a shared 2-core x86 machine:
# dense algebra (conv1d, Gram/covariance products, eigh) ran at 2-15 GFLOP/s,
# elementwise passes over conv outputs (compare, count, mask) at ~2 ns each.
ASSUMED_FLOPS_PER_SECOND = 1e10
ASSUMED_ELEMENTWISE_PER_SECOND = 5e8


@dataclass(frozen=True, eq=False)  # holds tensors: compare fields, not transforms
class ShapeTransform:
    """A fitted transform: per dilation, the (84, D, 9) conv weight and the (84, Q_d) biases."""

    dilations: tuple[int, ...]
    weights: tuple[torch.Tensor, ...]
    biases: tuple[np.ndarray, ...]

    @property
    def num_features(self) -> int:
        return sum(b.size for b in self.biases)


def base_kernels() -> np.ndarray:
    """(84, 9) float32: -1 everywhere, 2 at three taps, for every choice of three."""
    kernels = np.full((NUM_KERNELS, KERNEL_LENGTH), -1.0, dtype=np.float32)
    for k, taps in enumerate(combinations(range(KERNEL_LENGTH), 3)):
        kernels[k, list(taps)] = 2.0
    return kernels


def dilations_and_quantile_counts(longest: int) -> tuple[np.ndarray, np.ndarray]:
    """MiniRocket's dilations for items up to ``longest`` frames, and how many biases each kernel gets at each."""
    per_kernel = NUM_FEATURES // NUM_KERNELS
    num_spaced = min(per_kernel, MAX_DILATIONS)
    # Below 9 frames no dilation fits a kernel: keep dilation 1 rather than a negative exponent.
    max_exponent = max(0.0, math.log2((longest - 1) / (KERNEL_LENGTH - 1))) if longest > 1 else 0.0
    spaced = np.logspace(0, max_exponent, num_spaced, base=2).astype(np.int64)
    dilations, hits = np.unique(spaced, return_counts=True)
    counts = (hits * (per_kernel / num_spaced)).astype(np.int64)
    np.add.at(counts, np.arange(per_kernel - counts.sum()) % len(counts), 1)  # MiniRocket's round-robin remainder
    return dilations, counts


def num_features_for(longest: int) -> int:
    return NUM_KERNELS * int(dilations_and_quantile_counts(longest)[1].sum())


def _golden_quantiles(count: int) -> np.ndarray:
    # Low-discrepancy, so any prefix of the sequence spreads over (0, 1).
    return (np.arange(1, count + 1) * ((math.sqrt(5) + 1) / 2)) % 1


def _channel_mask(rng: np.random.Generator, feature_dim: int) -> np.ndarray:
    """(84, D) 0/1: each kernel's random channels, 1 to min(D, 9) of them, skewed small as in MiniRocket."""
    max_exponent = math.log2(min(feature_dim, KERNEL_LENGTH) + 1)
    sizes = (2 ** rng.uniform(0, max_exponent, NUM_KERNELS)).astype(np.int64)
    mask = np.zeros((NUM_KERNELS, feature_dim), dtype=np.float32)
    for k, size in enumerate(sizes):
        mask[k, rng.choice(feature_dim, size=size, replace=False)] = 1.0
    return mask


def _read_items(features: h5py.Dataset, chunk: np.ndarray) -> np.ndarray:
    # A contiguous run is one slice read; otherwise read just the wanted items,
    # so a sparse draw from a huge file never loads the span between them.
    if chunk[-1] - chunk[0] + 1 == len(chunk):
        return features[chunk[0] : chunk[-1] + 1]
    return features[chunk]


def _block_size(max_frames: int, feature_dim: int) -> int:
    widest = max(feature_dim, NUM_KERNELS)  # conv input is (B, D, T), output (B, 84, T)
    return int(np.clip(_BLOCK_VALUES // (max_frames * widest), 1, _BLOCK_ITEMS))


def _blocks(path: Path, indices: np.ndarray | None):
    """Yield ((B, D, T) float32 tensor with padding zeroed, (B,) int64 lengths, (B,) int64 labels)."""
    with h5py.File(path, "r") as f:
        features, lengths, labels = f[layout.FEATURES], f[layout.NUM_FRAMES][()], f[layout.LABELS][()]
        wanted = np.arange(len(lengths)) if indices is None else np.sort(indices)
        step = _block_size(features.shape[1], features.shape[2])
        for start in range(0, len(wanted), step):
            chunk = wanted[start : start + step]
            block = torch.from_numpy(np.asarray(_read_items(features, chunk), dtype=np.float32))
            block_lengths = lengths[chunk].astype(np.int64)
            real = torch.from_numpy(np.arange(block.shape[1])[None, :] < block_lengths[:, None])  # (B, T)
            # where, not multiply: NaN or inf padding times 0 would still leak in.
            block = torch.where(real[:, :, None], block, torch.zeros((), dtype=block.dtype))
            yield block.transpose(1, 2).contiguous(), block_lengths, labels[chunk].astype(np.int64)


def _convolve(block: torch.Tensor, weight: torch.Tensor, dilation: int) -> torch.Tensor:
    """(B, D, T) -> (B, 84, T), 'same' zero padding."""
    return torch.nn.functional.conv1d(block, weight, padding=dilation * (KERNEL_LENGTH // 2), dilation=dilation)


def _ppv(out: np.ndarray, lengths: np.ndarray, biases: np.ndarray) -> np.ndarray:
    """(B, 84, T) outputs, (84, Q) biases -> (B, 84 * Q) share of each item's real frames above each bias."""
    real = np.arange(out.shape[2])[None, None, :] < lengths[:, None, None]
    # Padding set to -inf is above no bias, so the counts cover real frames only.
    # numpy, not torch: its compare-and-count runs several times faster on CPU.
    out = np.where(real, out, np.float32(-np.inf))
    above = np.stack([np.count_nonzero(out > biases[None, :, q, None], axis=2) for q in range(biases.shape[1])], axis=2)
    return (above / np.maximum(lengths, 1)[:, None, None]).reshape(len(out), -1).astype(np.float32)


def _real_frame_quantiles(rows: np.ndarray, lengths: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """(K, T) rows with (K,) real lengths, (K, Q) quantiles -> (K, Q) float32, as np.quantile's linear method."""
    # One sort for all rows instead of a np.quantile call per row: +inf padding sorts after the real frames.
    real = np.arange(rows.shape[1])[None, :] < lengths[:, None]
    ranked = np.sort(np.where(real, rows, np.inf).astype(np.float64), axis=1)
    position = quantiles * (np.maximum(lengths, 1)[:, None] - 1)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, np.maximum(lengths, 1)[:, None] - 1)
    low, high = np.take_along_axis(ranked, below, 1), np.take_along_axis(ranked, above, 1)
    return (low + (position - below) * (high - low)).astype(np.float32)


def fit_transform(path: Path, indices: np.ndarray, seed: int = SEED) -> ShapeTransform:
    """Draw channel masks and fit biases on the train items ``indices`` of the split file ``path``."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "r") as f:
        feature_dim = int(f[layout.FEATURES].shape[2])
        longest = int(f[layout.NUM_FRAMES][()][indices].max())
    dilations, counts = dilations_and_quantile_counts(longest)
    kernels = torch.from_numpy(base_kernels())
    weights = tuple(
        kernels[:, None, :] * torch.from_numpy(_channel_mask(rng, feature_dim))[:, :, None] for _ in dilations
    )
    bias_items = np.sort(rng.choice(indices, size=min(BIAS_ITEMS, len(indices)), replace=False))
    blocks = list(_blocks(path, bias_items))
    block, lengths = torch.cat([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])
    quantiles = _golden_quantiles(NUM_KERNELS * int(counts.sum())).reshape(-1)
    biases, used = [], 0
    with torch.no_grad():
        for dilation, weight, count in zip(dilations, weights, counts, strict=True):
            out = _convolve(block, weight, int(dilation)).numpy()
            picks = rng.integers(len(bias_items), size=NUM_KERNELS)  # one train item per kernel, as MiniRocket
            q = quantiles[used : used + NUM_KERNELS * count].reshape(NUM_KERNELS, count)
            used += NUM_KERNELS * count
            biases.append(_real_frame_quantiles(out[picks, np.arange(NUM_KERNELS)], lengths[picks], q))
    return ShapeTransform(tuple(int(d) for d in dilations), weights, tuple(biases))


def shape_features(
    path: Path, transform: ShapeTransform, indices: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(N, num_features) float32 PPV features of the items ``indices`` (all when None), and their (N,) labels."""
    rows, labels = [], []
    with torch.no_grad():
        for block, lengths, block_labels in _blocks(path, indices):
            rows.append(
                np.concatenate(
                    [
                        _ppv(_convolve(block, weight, dilation).numpy(), lengths, bias)
                        for dilation, weight, bias in zip(
                            transform.dilations, transform.weights, transform.biases, strict=True
                        )
                    ],
                    axis=1,
                )
            )
            labels.append(block_labels)
    return np.concatenate(rows), np.concatenate(labels)


def fit_and_predict(
    train_file: Path, test_file: Path, cap: int = MAX_TRAIN_ITEMS
) -> tuple[np.ndarray, np.ndarray, Pipeline, dict[str, int]]:
    """Test labels, test predictions (class indices), the fitted model, and train/feature counts."""
    with h5py.File(train_file, "r") as f:
        num_train = len(f[layout.LABELS])
    indices = train_indices(num_train, cap)
    transform = fit_transform(train_file, indices)
    x_train, y_train = shape_features(train_file, transform, indices)
    x_test, y_test = shape_features(test_file, transform)
    model = make_pipeline(StandardScaler(), RidgeClassifierCV(alphas=RIDGE_ALPHAS))
    if len(np.unique(y_train)) < 2:
        preds = np.full(len(y_test), y_train[0])  # ridge needs two classes; one class can only predict itself
    else:
        preds = model.fit(x_train, y_train).predict(x_test)  # predicts label values: already full-list indices
    counts = {
        "train_items": len(y_train),
        "train_items_in_file": int(num_train),
        "num_features": transform.num_features,
    }
    return y_test, preds.astype(np.int64), model, counts


def fit_and_score(
    train_file: Path, test_file: Path, class_names: Sequence[str], cap: int = MAX_TRAIN_ITEMS
) -> dict[str, Any]:
    """Fit on train, score on test; the report's shape baseline entry, shaped like ``baseline.fit_and_score``."""
    started = time.perf_counter()
    y_test, preds, _, counts = fit_and_predict(train_file, test_file, cap)
    probs = np.zeros((len(y_test), len(class_names)))
    probs[np.arange(len(y_test)), preds] = 1.0  # a class absent from train is never predicted
    metrics = classification_metrics(y_test, probs, class_names)
    # A ridge classifier gives scores, not probabilities: NLL and ECE of one-hot
    # votes would measure nothing, so they are reported as absent.
    metrics.update(nll=None, ece=None)
    seconds = time.perf_counter() - started
    log.info(
        "shape baseline: ridge on %d train items, %d features, %.1f s",
        counts["train_items"],
        counts["num_features"],
        seconds,
    )
    return {"model": MODEL_NAME, "train_file": str(train_file), **counts, "seconds": seconds, **metrics}


def estimated_seconds(num_items: int, max_frames: int, feature_dim: int) -> float:
    """Rough wall time of ``fit_and_score`` on ``num_items`` items (train and test together).

    Flops of the convolutions (dense over all D channels) and of scikit-learn's
    leave-one-out ridge over all RIDGE_ALPHAS (every item counted as a train
    item, so it errs high) at ASSUMED_FLOPS_PER_SECOND, plus the elementwise
    passes over the (84, T) outputs (one compare per bias, a few per dilation)
    at ASSUMED_ELEMENTWISE_PER_SECOND. Ignores HDF5 reading.
    """
    dilations, counts = dilations_and_quantile_counts(max_frames)
    conv = 2.0 * NUM_KERNELS * feature_dim * KERNEL_LENGTH * max_frames * len(dilations)
    passes = NUM_KERNELS * max_frames * (counts.sum() + 4 * len(dilations))
    n, p = float(num_items), float(num_features_for(max_frames))
    alphas = len(RIDGE_ALPHAS)
    if n <= p:  # scikit-learn eigendecomposes the (n, n) Gram matrix, then solves n x n per alpha
        ridge = 2 * n * n * p + 10 * n**3 + alphas * 2 * n**3
    else:  # or the (p, p) covariance, then per alpha forms its inverse and the diagonal of X H X'
        ridge = 2 * n * p * p + 10 * p**3 + alphas * (2 * p**3 + 2 * n * p * p)
    return float(
        (num_items * conv + ridge) / ASSUMED_FLOPS_PER_SECOND + num_items * passes / ASSUMED_ELEMENTWISE_PER_SECOND
    )


def fits_budget(num_items: int, max_frames: int, feature_dim: int, budget_s: float = 60.0) -> bool:
    """Whether ``estimated_seconds`` stays within ``budget_s``."""
    return estimated_seconds(num_items, max_frames, feature_dim) <= budget_s
