"""How members' probabilities combine: weights chosen on validation, one temperature, the weighted average.

A combination is a weight per member (summing to 1). The temperature divides
each member's log-probabilities before the weighted average, so the combined
probabilities stay a mixture of (tempered) members and the uncertainty
decomposition of :mod:`videns.ensemble.uncertainty` holds exactly at any
temperature; at T = 1 it is the plain weighted softmax average.
"""

from collections.abc import Sequence
from typing import Literal

import numpy as np

Combination = Literal["mean", "mean_unflagged", "greedy"]
COMBINATIONS: tuple[Combination, ...] = ("mean", "mean_unflagged", "greedy")
# Log-probabilities are floored here so a member that put exactly 0 on a class stays finite.
LOG_FLOOR = 1e-300
# Caruana et al. (2004) ran forward selection well past the ensemble size and kept the best prefix.
GREEDY_ROUNDS_PER_MEMBER = 3


def tempered(member_probs: np.ndarray, temperature: float) -> np.ndarray:
    """Each member's probabilities with its log-probabilities divided by ``temperature``: (M, N, C)."""
    if temperature == 1.0:
        return member_probs
    logits = np.log(np.clip(member_probs, LOG_FLOOR, 1.0)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=-1, keepdims=True)


def combine(member_probs: np.ndarray, weights: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """The weighted average of the (tempered) members: (M, N, C), (M,) -> (N, C) float64."""
    return np.tensordot(np.asarray(weights, dtype=np.float64), tempered(member_probs, temperature), axes=1)


def nll(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], LOG_FLOOR, 1.0))))


def mean_weights(num_members: int, include: Sequence[bool] | None = None) -> np.ndarray:
    """Equal weights over the included members (all of them when ``include`` is None)."""
    mask = np.ones(num_members, dtype=bool) if include is None else np.asarray(include, dtype=bool)
    return mask / mask.sum()


def greedy_picks(
    member_probs: np.ndarray, labels: np.ndarray, rounds: int | None = None, max_members: int | None = None
) -> list[int]:
    """Caruana forward selection with replacement on validation NLL: the members picked, in order.

    Each round adds the member (possibly again) whose addition gives the lowest
    NLL of the running average; the picks returned are the best prefix. Once
    ``max_members`` distinct members are picked, only they may be added again.
    Ties go to the lower index, so the result is deterministic.
    """
    num_members = len(member_probs)
    rounds = rounds or GREEDY_ROUNDS_PER_MEMBER * num_members
    picks: list[int] = []
    running = np.zeros(member_probs.shape[1:], dtype=np.float64)  # (N, C) sum of picked members
    best_length, best_loss = 0, np.inf
    for step in range(1, rounds + 1):
        allowed = _allowed(num_members, picks, max_members)
        losses = [nll(labels, (running + member_probs[m]) / step) if allowed[m] else np.inf for m in range(num_members)]
        pick = int(np.argmin(losses))
        picks.append(pick)
        running += member_probs[pick]
        if losses[pick] < best_loss - 1e-12:
            best_loss, best_length = losses[pick], step
    return picks[:best_length]


def _allowed(num_members: int, picks: list[int], max_members: int | None) -> np.ndarray:
    """Every member, until ``max_members`` distinct ones are picked; then only those."""
    if max_members is None or len(set(picks)) < max_members:
        return np.ones(num_members, dtype=bool)
    return np.isin(np.arange(num_members), picks)


def greedy_weights(
    member_probs: np.ndarray, labels: np.ndarray, rounds: int | None = None, max_members: int | None = None
) -> np.ndarray:
    """The pick counts of :func:`greedy_picks` as weights summing to 1: (M,)."""
    counts = np.bincount(greedy_picks(member_probs, labels, rounds, max_members), minlength=len(member_probs))
    return counts / counts.sum()


def combination_weights(
    kind: Combination,
    val_member_probs: np.ndarray,
    val_labels: np.ndarray,
    flagged: Sequence[bool],
    max_members: int | None = None,
) -> np.ndarray:
    """The weights of one combination, from validation only. ``mean_unflagged`` of all-flagged members is ``mean``;
    ``max_members`` caps the distinct members ``greedy`` may pick."""
    num_members = len(val_member_probs)
    if kind == "mean":
        return mean_weights(num_members)
    if kind == "mean_unflagged":
        keep = [not f for f in flagged]
        return mean_weights(num_members, keep if any(keep) else None)
    if kind == "greedy":
        return greedy_weights(val_member_probs, val_labels, max_members=max_members)
    raise ValueError(f"unknown combination {kind!r}; expected one of {COMBINATIONS}")
