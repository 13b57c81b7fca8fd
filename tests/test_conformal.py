"""Split-conformal prediction sets: coverage holds, sets see validation only, the (n+1) correction is exact."""

from __future__ import annotations

import math

import numpy as np
import pytest

from videns.ensemble.conformal import (
    check_coverage,
    prediction_sets,
    set_metrics,
    set_names,
)
from videns.errors import ConfigError

# Unequal concentrations: rare classes' items score worse, so marginal sets under-cover them
# and a class-conditional method has something to fix.
CONCENTRATION = np.array([4.0, 1.0, 1.0, 0.5, 0.5])
# crepes computes p-values in a Python loop per (item, class): test sets stay small to keep this fast.
SPLITS = 150
N_CAL = 200
N_TEST = 100


def calibrated_items(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels drawn from them: the probabilities are exactly calibrated."""
    probs = rng.dirichlet(CONCENTRATION, size=count)
    labels = (rng.random((count, 1)) > probs.cumsum(axis=1)).sum(axis=1)
    return probs, np.minimum(labels, len(CONCENTRATION) - 1)


def exact_coverage(n_calibration: int | np.ndarray, coverage: float) -> float | np.ndarray:
    """Expected coverage with continuous scores: the rank ceil((n+1) c) out of n+1 exchangeable scores."""
    return np.ceil(np.round((np.asarray(n_calibration) + 1) * coverage, 9)) / (np.asarray(n_calibration) + 1)


def within_three_standard_errors(gaps: np.ndarray) -> bool:
    gaps = gaps[~np.isnan(gaps)]
    return abs(gaps.mean()) <= 3.0 * gaps.std(ddof=1) / math.sqrt(len(gaps))


@pytest.fixture(scope="module")
def repeated_splits() -> dict[str, np.ndarray]:
    """Per split: covered share of test items, overall and per true class, for marginal and Mondrian sets."""
    rng = np.random.default_rng(20240611)
    classes = len(CONCENTRATION)
    results = {
        "marginal_0.9": [],
        "marginal_0.8": [],
        "marginal_class": [],
        "mondrian_class": [],
        "mondrian_expected": [],
    }
    for _ in range(SPLITS):
        val_probs, val_labels = calibrated_items(rng, N_CAL)
        probs, labels = calibrated_items(rng, N_TEST)
        marginal = prediction_sets(val_probs, val_labels, probs, 0.9)
        results["marginal_0.9"].append(marginal[np.arange(N_TEST), labels].mean())
        at_80 = prediction_sets(val_probs, val_labels, probs, 0.8)
        results["marginal_0.8"].append(at_80[np.arange(N_TEST), labels].mean())
        mondrian = prediction_sets(val_probs, val_labels, probs, 0.9, mondrian=True)
        results["marginal_class"].append(per_class_coverage(marginal, labels, classes))
        results["mondrian_class"].append(per_class_coverage(mondrian, labels, classes))
        results["mondrian_expected"].append(exact_coverage(np.bincount(val_labels, minlength=classes), 0.9))
    return {key: np.array(values) for key, values in results.items()}


def per_class_coverage(sets: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    covered = sets[np.arange(len(labels)), labels]
    return np.array([covered[labels == k].mean() if np.any(labels == k) else np.nan for k in range(classes)])


@pytest.mark.parametrize("coverage", [0.9, 0.8])
def test_marginal_coverage_matches_the_finite_sample_guarantee(repeated_splits, coverage: float) -> None:
    per_split = repeated_splits[f"marginal_{coverage}"]
    standard_error = per_split.std(ddof=1) / math.sqrt(SPLITS)
    assert within_three_standard_errors(per_split - exact_coverage(N_CAL, coverage))
    assert per_split.mean() >= coverage - 3.0 * standard_error
    assert abs(per_split.mean() - coverage) <= 3.0 * standard_error + 1.0 / (N_CAL + 1)


def test_mondrian_sets_cover_every_true_class(repeated_splits) -> None:
    gaps = repeated_splits["mondrian_class"] - repeated_splits["mondrian_expected"]
    for k in range(len(CONCENTRATION)):
        assert within_three_standard_errors(gaps[:, k]), f"class {k}"
        covered = repeated_splits["mondrian_class"][:, k]
        covered = covered[~np.isnan(covered)]
        assert covered.mean() >= 0.9 - 3.0 * covered.std(ddof=1) / math.sqrt(len(covered)), f"class {k}"


def test_marginal_sets_do_not_cover_every_class_so_the_mondrian_test_can_fail(repeated_splits) -> None:
    per_class = np.nanmean(repeated_splits["marginal_class"], axis=0)
    assert per_class.min() < 0.85 and per_class.max() > 0.95


def test_sets_depend_on_validation_and_on_each_item_alone() -> None:
    rng = np.random.default_rng(1)
    val_probs, val_labels = calibrated_items(rng, 100)
    probs, _ = calibrated_items(rng, 60)
    sets = prediction_sets(val_probs, val_labels, probs)
    shuffle = rng.permutation(len(probs))
    # No test label goes in; reordering or subsetting the test items moves their sets with them.
    assert np.array_equal(prediction_sets(val_probs, val_labels, probs[shuffle]), sets[shuffle])
    assert np.array_equal(prediction_sets(val_probs, val_labels, probs[:7]), sets[:7])
    for mondrian in (False, True):
        changed = prediction_sets(val_probs, rng.permutation(val_labels), probs, mondrian=mondrian)
        assert not np.array_equal(changed, prediction_sets(val_probs, val_labels, probs, mondrian=mondrian))


def two_class_probs(true_class_probability: np.ndarray) -> np.ndarray:
    return np.stack([true_class_probability, 1.0 - true_class_probability], axis=1)


def test_nine_calibration_scores_keep_up_to_the_ninth_smallest() -> None:
    val_probs = two_class_probs(np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]))  # scores 0.1 .. 0.9
    val_labels = np.zeros(9, dtype=int)
    probs = two_class_probs(np.array([0.5, 0.1, 0.05, 0.2, 0.15]))  # class-0 scores .5, .9, .95, .8, .85
    # coverage 0.9: ceil(0.9 * 10) = 9th smallest = 0.9, a tie included; 0.95 is out.
    at_90 = prediction_sets(val_probs, val_labels, probs, 0.9)[:, 0]
    assert at_90.tolist() == [True, True, False, True, True]
    # coverage 0.8: ceil(0.8 * 10) = 8th smallest = 0.8.
    at_80 = prediction_sets(val_probs, val_labels, probs, 0.8)[:, 0]
    assert at_80.tolist() == [True, False, False, True, False]


def test_five_calibration_scores_cannot_exclude_anything_at_90_percent() -> None:
    val_probs = two_class_probs(np.array([0.9, 0.8, 0.7, 0.6, 0.5]))
    probs = two_class_probs(np.array([1.0, 0.0, 0.3, 0.99]))  # includes a score of 1: the worst possible
    # ceil(0.9 * 6) = 6 > 5 scores: the quantile is +infinity.
    assert prediction_sets(val_probs, np.zeros(5, dtype=int), probs, 0.9).all()
    assert not prediction_sets(val_probs, np.zeros(5, dtype=int), probs, 0.5).all()


def test_a_class_without_calibration_items_is_always_in_its_mondrian_set() -> None:
    val_probs = two_class_probs(np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]))
    probs = two_class_probs(np.array([0.05, 0.5, 1.0]))
    sets = prediction_sets(val_probs, np.zeros(9, dtype=int), probs, 0.9, mondrian=True)
    assert sets[:, 1].all()  # class 1 has no validation item
    assert sets[:, 0].tolist() == [False, True, True]


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, float("nan"), True])
def test_check_coverage_rejects_values_outside_the_open_unit_interval(bad) -> None:
    with pytest.raises(ConfigError) as caught:
        check_coverage(bad)
    assert "\n" not in str(caught.value) and "between 0 and 1" in str(caught.value)
    with pytest.raises(ConfigError):
        prediction_sets(np.full((3, 2), 0.5), np.zeros(3, dtype=int), np.full((1, 2), 0.5), bad)


def test_check_coverage_accepts_a_valid_value() -> None:
    check_coverage(0.9)
    check_coverage(np.float32(0.5))


def test_set_metrics_and_names_by_hand() -> None:
    sets = np.array([[True, False, False], [True, True, False], [False, False, False], [False, True, True]])
    labels = np.array([0, 2, 1, 2])
    metrics = set_metrics(sets, labels, ["a", "b", "c"])
    assert metrics["coverage"] == pytest.approx(0.5)  # items 0 and 3
    assert metrics["mean_size"] == pytest.approx(5 / 4)
    assert metrics["empty"] == pytest.approx(0.25) and metrics["singleton"] == pytest.approx(0.25)
    assert metrics["per_class"]["a"] == {"coverage": 1.0, "mean_size": 1.0, "support": 1}
    assert metrics["per_class"]["b"] == {"coverage": 0.0, "mean_size": 0.0, "support": 1}
    assert metrics["per_class"]["c"] == {"coverage": 0.5, "mean_size": 2.0, "support": 2}
    assert set_names(sets, ["a", "b", "c"]) == ["a", "a|b", "", "b|c"]
    no_c = set_metrics(sets[:3], labels[:3] % 2, ["a", "b", "c"])["per_class"]["c"]
    assert no_c == {"coverage": None, "mean_size": None, "support": 0}
