"""Flag members that collapsed in training, judged on validation only.

The rule: a member is flagged when its validation accuracy is

- below ``median - max(MIN_MARGIN, MAD_FACTOR * MAD)`` of all members' validation
  accuracies (MAD: median absolute deviation), or
- no better than always predicting the majority class of the validation split.

The median and MAD are robust: one or two collapsed members barely move them,
so a member at 25% among members at 92% is far outside, while the margin of
at least 5 points keeps a tight ensemble's normal spread from being flagged.
"""

from dataclasses import dataclass

import numpy as np

MIN_MARGIN = 0.05
MAD_FACTOR = 3.0


@dataclass(frozen=True)
class Flag:
    """One member's verdict: flagged or not, and why."""

    seed: int | str  # a library's candidates are named, not seeded
    val_accuracy: float
    flagged: bool
    reason: str | None


def collapse_threshold(accuracies: np.ndarray) -> float:
    """``median - max(MIN_MARGIN, MAD_FACTOR * MAD)`` of the members' validation accuracies."""
    median = float(np.median(accuracies))
    mad = float(np.median(np.abs(accuracies - median)))
    return median - max(MIN_MARGIN, MAD_FACTOR * mad)


def flag_members(seeds: list[int | str], val_member_probs: np.ndarray, val_labels: np.ndarray) -> list[Flag]:
    """Apply the rule to every member: (M, N, C) validation probabilities and (N,) labels."""
    accuracies = (val_member_probs.argmax(axis=2) == val_labels[None, :]).mean(axis=1)  # (M,)
    threshold = collapse_threshold(accuracies)
    majority = float(np.bincount(val_labels).max() / len(val_labels))
    flags = []
    for seed, accuracy in zip(seeds, accuracies.tolist()):
        reasons = []
        if accuracy < threshold:
            reasons.append(
                f"validation accuracy {accuracy:.4f} is below the members' median minus "
                f"max({MIN_MARGIN}, {MAD_FACTOR:g} x MAD) = {threshold:.4f}"
            )
        if accuracy <= majority:
            reasons.append(
                f"validation accuracy {accuracy:.4f} is no better than always predicting the "
                f"majority class ({majority:.4f})"
            )
        flags.append(Flag(seed, accuracy, bool(reasons), "; ".join(reasons) or None))
    return flags
