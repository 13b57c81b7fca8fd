"""Selective prediction: risk-coverage points, AURC and accuracy at coverage against a plain loop."""

from __future__ import annotations

import numpy as np
import pytest

from videns.ensemble.selective import (
    COVERAGES,
    accuracy_at_coverage,
    aurc,
    risk_coverage,
    selective_report,
)


def ranked_by_loop(confidence, correct) -> list[bool]:
    """Correctness in answering order: most confident first, ties by item index."""
    order = sorted(range(len(confidence)), key=lambda item: (-float(confidence[item]), item))
    return [bool(correct[item]) for item in order]


def loop_risks(confidence, correct) -> list[float]:
    answered = ranked_by_loop(confidence, correct)
    risks = []
    for kept in range(1, len(answered) + 1):
        wrong = sum(1 for right in answered[:kept] if not right)
        risks.append(wrong / kept)
    return risks


def loop_accuracy_at(confidence, correct, coverage: float) -> float:
    answered = ranked_by_loop(confidence, correct)
    kept = 0
    while kept < len(answered) and kept / len(answered) < coverage - 1e-12:
        kept += 1  # the smallest number of items whose share reaches the coverage
    return sum(answered[:kept]) / kept


@pytest.fixture
def scored_items() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    confidence = np.round(rng.random(57), 1)  # rounded: many ties, so the tie order is exercised
    correct = rng.random(57) < confidence
    return confidence, correct


def test_risk_coverage_points_match_a_loop(scored_items) -> None:
    confidence, correct = scored_items
    coverage, risk = risk_coverage(confidence, correct)
    assert coverage.tolist() == pytest.approx([kept / 57 for kept in range(1, 58)])
    assert risk.tolist() == pytest.approx(loop_risks(confidence, correct))
    assert aurc(confidence, correct) == pytest.approx(sum(loop_risks(confidence, correct)) / 57)


def test_aurc_by_hand_and_ties_in_item_order() -> None:
    # Answering order 0, 1, 2: risks 0, 1/2, 1/3.
    assert aurc([0.9, 0.8, 0.7], [True, False, True]) == pytest.approx((0 + 1 / 2 + 1 / 3) / 3)
    # All tied: item order decides, so the wrong first item gives risk 1 at k = 1.
    _, risk = risk_coverage(np.full(3, 0.5), np.array([False, True, True]))
    assert risk.tolist() == pytest.approx([1.0, 0.5, 1 / 3])


@pytest.mark.parametrize("coverage", [*COVERAGES, 0.5, 0.07, 1.0])
def test_accuracy_at_coverage_matches_a_loop(scored_items, coverage: float) -> None:
    confidence, correct = scored_items
    assert accuracy_at_coverage(confidence, correct, coverage) == pytest.approx(
        loop_accuracy_at(confidence, correct, coverage)
    )


def test_accuracy_at_coverage_keeps_ceil_of_the_share() -> None:
    confidence = np.linspace(1.0, 0.0, 100)
    correct = np.arange(100) < 90  # the 90 most confident are right, the rest wrong
    assert accuracy_at_coverage(confidence, correct, 0.9) == 1.0
    assert accuracy_at_coverage(confidence, correct, 0.95) == pytest.approx(90 / 95)
    # 0.07 * 100 is 7.000000000000001 in floats: still 7 items, not 8.
    assert accuracy_at_coverage(confidence, np.arange(100) < 7, 0.07) == 1.0
    # ceil(0.8 * 7) = 6 items, the sixth wrong.
    sixth_wrong = np.array([1, 1, 1, 1, 1, 0, 1], dtype=bool)
    assert accuracy_at_coverage(confidence[:7], sixth_wrong, 0.8) == pytest.approx(5 / 6)
    with pytest.raises(ValueError):
        accuracy_at_coverage(confidence, correct, 0.0)


def test_report_ranks_low_mutual_information_first() -> None:
    rng = np.random.default_rng(5)
    probs = rng.dirichlet(np.ones(4), size=40)
    labels = rng.integers(0, 4, size=40)
    correct = probs.argmax(axis=1) == labels
    # Disagreement that exactly separates right from wrong: ranked low-first, every error comes last.
    mutual_information = np.where(correct, 0.01, 0.5) + rng.random(40) * 0.001
    report = selective_report(probs, mutual_information, labels)
    by_mi = report["by_mutual_information"]
    assert by_mi["aurc"] == pytest.approx(sum(loop_risks(-mutual_information, correct)) / 40)
    assert by_mi["aurc"] < aurc(mutual_information, correct)  # high-MI-first would be worse
    right = int(correct.sum())
    assert loop_risks(-mutual_information, correct)[right - 1] == 0.0
    assert set(by_mi["accuracy_at"]) == {"0.8", "0.9", "0.95"}
    for key, value in by_mi["accuracy_at"].items():
        assert value == pytest.approx(loop_accuracy_at(-mutual_information, correct, float(key)))
    by_max = report["by_max_probability"]
    assert by_max["aurc"] == pytest.approx(sum(loop_risks(probs.max(axis=1), correct)) / 40)
    assert by_max["accuracy_at"]["0.9"] == pytest.approx(loop_accuracy_at(probs.max(axis=1), correct, 0.9))
    assert report["full_coverage_accuracy"] == pytest.approx(correct.mean())


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        risk_coverage(np.array([0.5, 0.6]), np.array([True]))
    with pytest.raises(ValueError):
        aurc(np.array([]), np.array([], dtype=bool))
    with pytest.raises(ValueError):
        aurc(np.array([np.nan, 0.5]), np.array([True, False]))
