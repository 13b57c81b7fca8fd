"""Class rebalancing for the training split, deterministic by seed (seed 004).

- ``oversample_indices``: the seed's 'oversampled' set. Each class is brought to one
  count: larger classes are downsampled without replacement, smaller ones keep every
  item and draw the rest with replacement.
- ``smote_resample``: the seed's 'smote' set, via imbalanced-learn's SMOTE, which
  interpolates new minority items between neighbours; it needs fixed-length items.
"""

import numpy as np

from videns.errors import ConfigError, DataError


def oversample_indices(labels: np.ndarray, target_count: int | None = None, seed: int = 0) -> np.ndarray:
    """Indices into ``labels`` giving every present class ``target_count`` items, shuffled.

    ``target_count`` defaults to the majority class's count. Smaller classes keep all
    their items once and draw the remainder with replacement, so no item is lost to
    chance; larger classes are downsampled without replacement.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise DataError(f"oversampling needs a non-empty 1-D label array, got shape {labels.shape}")
    classes, counts = np.unique(labels, return_counts=True)
    if target_count is None:
        target_count = int(counts.max())
    if isinstance(target_count, bool) or not isinstance(target_count, (int, np.integer)) or target_count < 1:
        raise ConfigError(f"target_count must be an integer >= 1, got {target_count!r}")
    rng = np.random.default_rng(seed)
    picked = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        if len(members) >= target_count:
            picked.append(rng.choice(members, target_count, replace=False))
        else:
            extra = rng.choice(members, target_count - len(members), replace=True)
            picked.append(np.concatenate([members, extra]))
    return rng.permutation(np.concatenate(picked)).astype(np.int64)


def require_fixed_length(lengths: np.ndarray) -> None:
    """SMOTE interpolates whole items, so every item must have the same real length."""
    distinct = np.unique(lengths)
    if len(distinct) > 1:
        raise DataError(f"smote needs fixed-length items; {len(distinct)} distinct lengths found "
                        f"({distinct.min()}..{distinct.max()}); use oversampling for variable-length data")


def smote_resample(
    features: np.ndarray, lengths: np.ndarray, labels: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SMOTE every class up to the majority count; the originals come first, unchanged.

    Args:
        features: (N, T, D) items, all of one real length.
        lengths: (N,) real lengths; must all be equal.
        labels: (N,) class ids.
        seed: SMOTE's random_state.

    Returns:
        (features (M, T, D), lengths (M,), labels (M,)) with M >= N.
    """
    features, lengths, labels = np.asarray(features), np.asarray(lengths), np.asarray(labels)
    if features.ndim != 3 or not len(features) == len(lengths) == len(labels):
        raise DataError(f"smote needs features (N, T, D) with N lengths and labels; got {features.shape}, "
                        f"{lengths.shape}, {labels.shape}")
    require_fixed_length(lengths)
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2 or counts.min() == counts.max():
        return features.copy(), lengths.copy(), labels.copy()  # nothing to balance
    from imblearn.over_sampling import SMOTE

    smote = SMOTE(random_state=seed)
    if counts.min() <= smote.k_neighbors:
        raise DataError(f"smote needs more than {smote.k_neighbors} items per class (its neighbours); "
                        f"class {classes[counts.argmin()]} has {counts.min()}")
    n, t, d = features.shape
    flat, new_labels = smote.fit_resample(features.reshape(n, t * d), labels)  # (M, T*D)
    new_features = flat.reshape(-1, t, d).astype(features.dtype, copy=False)  # (M, T, D)
    new_lengths = np.full(len(new_labels), lengths[0], dtype=lengths.dtype)
    return new_features, new_lengths, np.asarray(new_labels, dtype=labels.dtype)
