"""A sanity baseline: logistic regression on each item's per-dimension mean and std over its real frames.

It sees no order in time, so an ensemble of temporal models that does not beat
it is not earning its cost. Fitted on train (at most MAX_TRAIN_ITEMS items, a
seeded draw), scored on test.
"""

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from videns.data import layout
from videns.metrics import classification_metrics

log = logging.getLogger(__name__)

MODEL_NAME = "logistic regression on per-item mean and std over real frames"
MAX_TRAIN_ITEMS = 20_000
SEED = 0
MAX_ITER = 1000
_BLOCK_ITEMS = 256  # items read at once: bounds memory on large splits


def summary_features(path: Path, indices: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2D) [mean, std] over each item's first num_frames frames, and the (N,) labels."""
    with h5py.File(path, "r") as f:
        features, lengths, labels = f[layout.FEATURES], f[layout.NUM_FRAMES][()], f[layout.LABELS][()]
        wanted = np.arange(len(lengths)) if indices is None else np.sort(indices)
        rows = []
        for start in range(0, len(wanted), _BLOCK_ITEMS):
            chunk = wanted[start : start + _BLOCK_ITEMS]
            block = features[chunk[0] : chunk[-1] + 1][chunk - chunk[0]].astype(np.float64)  # (B, T, D)
            rows.append(_masked_mean_std(block, lengths[chunk]))
    return np.concatenate(rows), labels[wanted].astype(np.int64)


def _masked_mean_std(block: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    real = (np.arange(block.shape[1])[None, :] < lengths[:, None])[:, :, None]  # (B, T, 1)
    count = lengths[:, None].astype(np.float64)
    mean = (block * real).sum(axis=1) / count  # (B, D)
    var = (((block - mean[:, None, :]) * real) ** 2).sum(axis=1) / count
    return np.concatenate([mean, np.sqrt(var)], axis=1)  # (B, 2D)


def train_indices(num_items: int, cap: int = MAX_TRAIN_ITEMS, seed: int = SEED) -> np.ndarray:
    """Every item, or a seeded draw of ``cap`` of them."""
    if num_items <= cap:
        return np.arange(num_items)
    return np.sort(np.random.default_rng(seed).choice(num_items, size=cap, replace=False))


def fit_and_score(
    train_file: Path, test_file: Path, class_names: Sequence[str], cap: int = MAX_TRAIN_ITEMS
) -> dict[str, Any]:
    """Fit on train, score on test; the report's ``baseline`` entry."""
    with h5py.File(train_file, "r") as f:
        num_train = len(f[layout.LABELS])
    x_train, y_train = summary_features(train_file, train_indices(num_train, cap))
    x_test, y_test = summary_features(test_file)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=MAX_ITER, random_state=SEED))
    model.fit(x_train, y_train)
    probs = np.zeros((len(y_test), len(class_names)))
    probs[:, model.classes_] = model.predict_proba(x_test)  # a class absent from train keeps probability 0
    log.info("baseline: logistic regression on %d train items, %d features", len(y_train), x_train.shape[1])
    return {
        "model": MODEL_NAME,
        "train_file": str(train_file),
        "train_items": int(len(y_train)),
        "train_items_in_file": int(num_train),
        **classification_metrics(y_test, probs, class_names),
    }
