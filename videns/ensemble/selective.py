"""Selective prediction: answer only the most confident items, and what that buys in accuracy.

Items are ranked by a confidence (higher = answered first). Keeping the
``k`` most confident of ``N`` items gives the point (coverage ``k/N``, risk =
error rate among the kept). Ties in confidence keep item order (stable sort),
so a curve is reproducible and does not depend on the sort algorithm.

Two rankings are reported: by the combined maximum probability, and by
ensemble disagreement (mutual information), where LOW mutual information
means confident.
"""

from __future__ import annotations

import math

import numpy as np

COVERAGES = (0.8, 0.9, 0.95)
# coverage * N is rounded before ceil so float noise (0.07 * 100 = 7.000000000000001) does not add an item.
_DECIMALS = 9


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(coverage, risk)`` for keeping the ``k = 1..N`` most confident items.

    Args:
        confidence: ``(N,)`` higher means answered earlier; ties keep item order.
        correct: ``(N,)`` whether each item's prediction is right.
    """
    confidence, correct = _checked(confidence, correct)
    order = np.argsort(-confidence, kind="stable")
    kept = np.arange(1, len(correct) + 1)
    errors_among_kept = np.cumsum(~correct[order])
    return kept / len(correct), errors_among_kept / kept


def aurc(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk-coverage curve: the mean of the risk over ``k = 1..N`` kept items.

    This is the usual discrete AURC (Geifman & El-Yaniv): every coverage step
    ``1/N`` weighs the same, no interpolation. Lower is better; a perfect
    ranking of a model with error rate ``e`` still has a positive AURC.
    """
    _, risk = risk_coverage(confidence, correct)
    return float(np.mean(risk))


def accuracy_at_coverage(confidence: np.ndarray, correct: np.ndarray, coverage: float) -> float:
    """Accuracy on the ``ceil(coverage * N)`` most confident items (at least one)."""
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage must be in (0, 1], got {coverage!r}")
    confidence, correct = _checked(confidence, correct)
    kept = max(1, math.ceil(round(coverage * len(correct), _DECIMALS)))
    order = np.argsort(-confidence, kind="stable")
    return float(np.mean(correct[order[:kept]]))


def selective_report(probs: np.ndarray, mutual_information: np.ndarray, labels: np.ndarray) -> dict:
    """AURC and accuracy at :data:`COVERAGES`, ranked by max probability and by (low) mutual information."""
    probs = np.asarray(probs, dtype=np.float64)
    correct = probs.argmax(axis=1) == np.asarray(labels)
    rankings = {
        "by_max_probability": probs.max(axis=1),
        "by_mutual_information": -np.asarray(mutual_information, dtype=np.float64),  # low disagreement first
    }
    report: dict = {name: _ranking_summary(confidence, correct) for name, confidence in rankings.items()}
    report["full_coverage_accuracy"] = float(np.mean(correct))
    return report


def _ranking_summary(confidence: np.ndarray, correct: np.ndarray) -> dict:
    return {
        "aurc": aurc(confidence, correct),
        "accuracy_at": {str(coverage): accuracy_at_coverage(confidence, correct, coverage) for coverage in COVERAGES},
    }


def _checked(confidence, correct) -> tuple[np.ndarray, np.ndarray]:
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if confidence.ndim != 1 or confidence.shape != correct.shape:
        raise ValueError(f"confidence {confidence.shape} and correct {correct.shape} must be equal-length vectors")
    if not len(confidence):
        raise ValueError("no items to rank")
    if np.isnan(confidence).any():
        raise ValueError("confidence has NaN: the ranking would be undefined")
    return confidence, correct
