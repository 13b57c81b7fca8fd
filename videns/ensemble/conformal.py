"""Split-conformal prediction sets from precomputed probabilities, with crepes' p-values.

The nonconformity score of class ``k`` for an item is ``1 - p_k`` (the "LAC"
or "THR" score). Sets are calibrated on validation items only, so test labels
never touch them.

p-values come from :class:`crepes.ConformalClassifier` with ``smoothing=False``:
``p = (#{calibration scores >= s} + 1) / (n + 1)``. A tied calibration score
counts as at least as nonconforming as the test score, which keeps the
p-value conservative under ties.

Inclusion rule: a class is in the set when ``p > 1 - coverage``, the textbook
rule (Vovk et al.; Angelopoulos & Bates), equivalent to keeping scores up to
the ``ceil((n + 1) * coverage)``-th smallest calibration score, and to "every
class" when that rank exceeds ``n``. crepes' own ``predict_set`` uses
``p >= 1 - coverage`` instead, which adds one more rank whenever
``(n + 1) * (1 - coverage)`` is a whole number (n=9, coverage 0.9: every
class), so the rule is applied here, on exact counts rather than floats.

Marginal sets calibrate on all validation items. Class-conditional
("Mondrian", label-conditional) sets calibrate candidate class ``k`` only on
validation items whose true class is ``k``, which gives coverage per true
class; a class with no validation item has ``p = 1/(0+1) = 1`` and so is in
every set (nothing is known against it).
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real

import numpy as np
from crepes import ConformalClassifier

from videns.errors import ConfigError

DEFAULT_COVERAGE = 0.9
# (n+1)*(1-coverage) is compared to whole counts: round away float noise such as 1 - 0.9 = 0.0999...98.
_COUNT_DECIMALS = 9


def coverage_problem(coverage: float, name: str = "conformal coverage") -> str | None:
    """What is wrong with ``coverage`` in one phrase naming it as ``name``, or None when ``0 < coverage < 1``."""
    if isinstance(coverage, Real) and not isinstance(coverage, bool) and 0.0 < float(coverage) < 1.0:
        return None
    return f"{name} must be strictly between 0 and 1, got {coverage!r}"


def check_coverage(coverage: float) -> None:
    """Raise :class:`ConfigError` unless ``0 < coverage < 1``."""
    problem = coverage_problem(coverage)
    if problem:
        raise ConfigError(problem)


def prediction_sets(
    val_probs: np.ndarray,
    val_labels: np.ndarray,
    probs: np.ndarray,
    coverage: float = DEFAULT_COVERAGE,
    mondrian: bool = False,
) -> np.ndarray:
    """``(N, C)`` booleans: class ``k`` is in item ``i``'s set; calibrated on validation only.

    Args:
        val_probs: ``(n, C)`` validation probabilities (the calibration set).
        val_labels: ``(n,)`` validation true classes.
        probs: ``(N, C)`` probabilities of the items to predict sets for.
        coverage: target probability that the true class is in the set.
        mondrian: calibrate each class on its own validation items (coverage per true class).
    """
    check_coverage(coverage)
    val_probs, val_labels, probs = _checked(val_probs, val_labels, probs)
    scores = 1.0 - probs
    val_scores = 1.0 - val_probs[np.arange(len(val_labels)), val_labels]
    if not mondrian:
        return _in_set(_p_values(val_scores, scores), len(val_scores), coverage)
    sets = np.empty(probs.shape, dtype=bool)
    for k in range(probs.shape[1]):
        # crepes' Mondrian bins are per test item; class-conditional sets need one bin per candidate class.
        class_scores = val_scores[val_labels == k]
        sets[:, k] = _in_set(_p_values(class_scores, scores[:, k]), len(class_scores), coverage)
    return sets


def set_metrics(sets: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> dict:
    """Empirical coverage, mean set size, shares of empty and singleton sets, and the same per true class."""
    sets = np.asarray(sets, dtype=bool)
    labels = np.asarray(labels)
    if sets.ndim != 2 or sets.shape != (len(labels), len(class_names)):
        raise ValueError(
            f"sets of shape {sets.shape} do not match {len(labels)} labels and {len(class_names)} class names"
        )
    covered = sets[np.arange(len(labels)), labels]
    sizes = sets.sum(axis=1)
    return {
        "coverage": _mean_or_none(covered),
        "mean_size": _mean_or_none(sizes),
        "empty": _mean_or_none(sizes == 0),
        "singleton": _mean_or_none(sizes == 1),
        "per_class": {
            name: {
                "coverage": _mean_or_none(covered[labels == k]),
                "mean_size": _mean_or_none(sizes[labels == k]),
                "support": int(np.sum(labels == k)),
            }
            for k, name in enumerate(class_names)
        },
    }


def set_names(sets: np.ndarray, class_names: Sequence[str]) -> list[str]:
    """One string per item: the names of the classes in its set joined by ``|``; ``""`` for an empty set."""
    names = list(class_names)
    return ["|".join(name for name, inside in zip(names, row) if inside) for row in np.asarray(sets, dtype=bool)]


def _p_values(calibration_scores: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Non-smoothed conformal p-values of ``scores`` against the calibration scores (1 when there are none)."""
    classifier = ConformalClassifier().fit(np.asarray(calibration_scores, dtype=np.float64))
    return np.asarray(classifier.predict_p(np.asarray(scores, dtype=np.float64), smoothing=False))


def _in_set(p_values: np.ndarray, n_calibration: int, coverage: float) -> np.ndarray:
    """``p > 1 - coverage``, compared as counts: ``(n+1) p`` is the whole number ``#{>= s} + 1``."""
    counts = np.rint(p_values * (n_calibration + 1))
    allowed_misses = round((1.0 - coverage) * (n_calibration + 1), _COUNT_DECIMALS)
    return counts > allowed_misses


def _checked(val_probs, val_labels, probs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    val_probs = np.asarray(val_probs, dtype=np.float64)
    val_labels = np.asarray(val_labels)
    probs = np.asarray(probs, dtype=np.float64)
    if val_probs.ndim != 2 or probs.ndim != 2 or val_probs.shape[1] != probs.shape[1]:
        raise ValueError(
            f"validation probabilities {val_probs.shape} and probabilities {probs.shape} "
            "must both be (items, classes) with the same classes"
        )
    if val_labels.shape != (len(val_probs),):
        raise ValueError(f"{val_labels.shape} validation labels for {len(val_probs)} validation items")
    if len(val_labels) and (val_labels.min() < 0 or val_labels.max() >= probs.shape[1]):
        raise ValueError(f"validation labels must lie in 0..{probs.shape[1] - 1}")
    return val_probs, val_labels.astype(np.int64), probs


def _mean_or_none(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None
