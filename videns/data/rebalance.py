"""Class rebalancing for the training split, deterministic by seed.

- ``oversample_indices``: the heartbeat recipes' 'oversampled' set. Each class is brought to one
  count: larger classes are downsampled without replacement, smaller ones keep every
  item and draw the rest with replacement.
- ``smote_resample``: the heartbeat recipes' 'smote' set, via imbalanced-learn's SMOTE, which
  interpolates new minority items between neighbours; it needs fixed-length items.

Either one logs a line when it makes the training split more than ``GROWTH_WARNING``
times larger, since an epoch then takes that many times longer.
"""

import logging
import re

import numpy as np

from videns.errors import ConfigError, DataError

log = logging.getLogger(__name__)

MAJORITY = "majority"
GROWTH_WARNING = 10  # log when rebalancing makes the training split more than this many times larger
_MULTIPLE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*x\s*majority\s*$")

TargetSpec = int | str  # an item count, "majority", or "<k>x majority" such as "2x majority"


def check_target_spec(spec: TargetSpec | None, key: str = "data.oversample_target") -> None:
    """Raise ConfigError naming ``key`` unless ``spec`` is a count >= 1, 'majority' or '<k>x majority' (k > 0)."""
    if spec is None or _majority_multiple(spec) is not None:
        return
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool) and spec >= 1:
        return
    raise ConfigError(
        f"{key} must be an item count >= 1, '{MAJORITY}' or '<k>x {MAJORITY}' (e.g. '2x {MAJORITY}'), got {spec!r}"
    )


def resolve_target(spec: TargetSpec | None, majority_count: int) -> int:
    """Items per class that ``spec`` asks for, given the majority class's count (None means 'majority')."""
    check_target_spec(spec, key="target_count")
    multiple = 1.0 if spec is None else _majority_multiple(spec)
    if multiple is None:
        return int(spec)
    return max(1, round(multiple * majority_count))


def _majority_multiple(spec: TargetSpec) -> float | None:
    if not isinstance(spec, str):
        return None
    if spec.strip() == MAJORITY:
        return 1.0
    match = _MULTIPLE.match(spec)
    return float(match.group(1)) if match and float(match.group(1)) > 0 else None


def log_growth(how: str, before: int, after: int) -> None:
    """One line when rebalancing multiplied the training split by more than GROWTH_WARNING."""
    if after > GROWTH_WARNING * before:
        log.warning(
            "%s makes the training split %.0fx larger: %d -> %d items per epoch", how, after / before, before, after
        )


def oversample_indices(labels: np.ndarray, target_count: TargetSpec | None = None, seed: int = 0) -> np.ndarray:
    """Indices into ``labels`` giving every present class ``target_count`` items, shuffled.

    ``target_count`` is a count, 'majority' (the default) or '<k>x majority'. Smaller classes keep all
    their items once and draw the remainder with replacement, so no item is lost to
    chance; larger classes are downsampled without replacement.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise DataError(f"oversampling needs a non-empty 1-D label array, got shape {labels.shape}")
    classes, counts = np.unique(labels, return_counts=True)
    target_count = resolve_target(target_count, int(counts.max()))
    rng = np.random.default_rng(seed)
    picked = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        if len(members) >= target_count:
            picked.append(rng.choice(members, target_count, replace=False))
        else:
            extra = rng.choice(members, target_count - len(members), replace=True)
            picked.append(np.concatenate([members, extra]))
    log_growth(f"oversampling to {target_count} items per class", len(labels), target_count * len(classes))
    return rng.permutation(np.concatenate(picked)).astype(np.int64)


def require_fixed_length(lengths: np.ndarray) -> None:
    """SMOTE interpolates whole items, so every item must have the same real length."""
    distinct = np.unique(lengths)
    if len(distinct) > 1:
        raise DataError(
            f"smote needs fixed-length items; {len(distinct)} distinct lengths found "
            f"({distinct.min()}..{distinct.max()}); use oversampling for variable-length data"
        )


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
        raise DataError(
            f"smote needs features (N, T, D) with N lengths and labels; got {features.shape}, "
            f"{lengths.shape}, {labels.shape}"
        )
    require_fixed_length(lengths)
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2 or counts.min() == counts.max():
        return features.copy(), lengths.copy(), labels.copy()  # nothing to balance
    from imblearn.over_sampling import SMOTE

    smote = SMOTE(random_state=seed)
    if counts.min() <= smote.k_neighbors:
        raise DataError(
            f"smote needs more than {smote.k_neighbors} items per class (its neighbours); "
            f"class {classes[counts.argmin()]} has {counts.min()}"
        )
    n, t, d = features.shape
    flat, new_labels = smote.fit_resample(features.reshape(n, t * d), labels)  # (M, T*D)
    new_features = flat.reshape(-1, t, d).astype(features.dtype, copy=False)  # (M, T, D)
    new_lengths = np.full(len(new_labels), lengths[0], dtype=lengths.dtype)
    log_growth("smote", n, len(new_labels))
    return new_features, new_lengths, np.asarray(new_labels, dtype=labels.dtype)
