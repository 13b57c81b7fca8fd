"""Temperature scaling of a combination, fitted on validation NLL, applied only where it earns its place.

A fitted temperature is applied only when it is an honest estimate:

- a fit that stops at a bound of its search is no estimate: at the lower bound
  validation is (nearly) separable, so NLL keeps falling as T shrinks and every
  probability would become 0 or 1; at the upper bound the probabilities carry
  (almost) no signal and NLL keeps falling as they flatten;
- a fit that lowers validation NLL only in sample is noise: the temperature is
  cross-fitted (fitted on K-1 folds of validation, scored on the held-out fold),
  and applied only when that out-of-fold NLL is lower than at T = 1 by at least
  MIN_NLL_GAIN.

Otherwise the probabilities stay raw (T = 1), and the choice says why.
"""

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from videns.ensemble.combine import combine, nll
from videns.metrics import expected_calibration_error

# Bounds on log T: temperatures from 1/20 to 20 cover any realistic miscalibration.
LOG_T_BOUNDS = (-np.log(20.0), np.log(20.0))
CALIBRATION_METRICS = ("nll", "ece", "brier")
FOLDS = 5
MIN_NLL_GAIN = 0.01  # relative: out-of-fold NLL must fall by 1% for the temperature to be applied
FOLD_SEED = 0
# A fit within 10% of a bound is at it: where NLL is flat near 0 the bounded search stops short of the
# bound (T = 0.053 on separable data), which is still "no estimate".
BOUND_TOLERANCE = np.log(1.1)


@dataclass(frozen=True)
class TemperatureChoice:
    """The temperature applied to the combination, the one fitted on all of validation, and why."""

    temperature: float  # applied: the fitted one, or 1.0
    fitted: float
    applied: bool
    reason: str
    out_of_fold_nll: dict[str, float] | None  # {"raw": ..., "scaled": ...}; None when not cross-fitted

    def as_dict(self) -> dict:
        return asdict(self)


def fit_temperature(member_probs: np.ndarray, weights: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the combination's NLL on these (validation) items."""
    result = minimize_scalar(
        lambda log_t: nll(labels, combine(member_probs, weights, float(np.exp(log_t)))),
        bounds=LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(result.x))


def choose_temperature(member_probs: np.ndarray, weights: np.ndarray, labels: np.ndarray) -> TemperatureChoice:
    """Fit on all validation items; apply the fit only when it is off its bounds and gains out of fold."""
    fitted = fit_temperature(member_probs, weights, labels)
    bound = which_bound(fitted)
    if bound == "lower":
        return _raw(
            fitted,
            f"the fit stopped at the lower bound of its search (T = {fitted:.3f}): validation "
            "is (nearly) separable, so its NLL keeps falling as T shrinks and every probability "
            "would become 0 or 1",
            None,
        )
    if bound == "upper":
        return _raw(
            fitted,
            f"the fit stopped at the upper bound of its search (T = {fitted:.3f}): the "
            "combination's validation probabilities carry (almost) no signal, so its NLL keeps "
            "falling as every probability flattens toward uniform",
            None,
        )
    scores = out_of_fold_nll(member_probs, weights, labels)
    if scores is None:
        return _raw(fitted, f"validation has too few items ({len(labels)}) to check the fit out of fold", None)
    gain = (scores["raw"] - scores["scaled"]) / max(scores["raw"], 1e-12)
    if gain < MIN_NLL_GAIN:
        return _raw(
            fitted,
            f"out of fold, T = {fitted:.3f} changes validation NLL from {scores['raw']:.4f} to "
            f"{scores['scaled']:.4f} ({100 * gain:+.1f}%), less than the "
            f"{100 * MIN_NLL_GAIN:.0f}% gain asked for",
            scores,
        )
    return TemperatureChoice(
        fitted,
        fitted,
        True,
        f"out of fold, T = {fitted:.3f} lowers validation NLL from "
        f"{scores['raw']:.4f} to {scores['scaled']:.4f} ({100 * gain:.1f}% lower)",
        scores,
    )


def out_of_fold_nll(
    member_probs: np.ndarray, weights: np.ndarray, labels: np.ndarray, folds: int = FOLDS
) -> dict[str, float] | None:
    """Mean NLL of each fold's items at T = 1 and at the T fitted on the other folds; None if too few items."""
    if len(labels) < 2 * folds:
        return None
    fold_of = np.random.default_rng(FOLD_SEED).permutation(len(labels)) % folds
    raw = scaled = 0.0
    for fold in range(folds):
        held, rest = fold_of == fold, fold_of != fold
        temperature = fit_temperature(member_probs[:, rest], weights, labels[rest])
        share = held.mean()
        raw += share * nll(labels[held], combine(member_probs[:, held], weights))
        scaled += share * nll(labels[held], combine(member_probs[:, held], weights, temperature))
    return {"raw": float(raw), "scaled": float(scaled)}


def which_bound(temperature: float) -> str | None:
    """ "lower" or "upper" when the fit stopped at that bound of its search, else None."""
    distance = np.abs(np.log(temperature) - np.array(LOG_T_BOUNDS))
    if distance.min() >= BOUND_TOLERANCE:
        return None
    return "lower" if distance.argmin() == 0 else "upper"


def _raw(fitted: float, reason: str, scores: dict[str, float] | None) -> TemperatureChoice:
    return TemperatureChoice(1.0, fitted, False, f"not applied (T = 1): {reason}", scores)


def brier_score(labels: np.ndarray, probs: np.ndarray) -> float:
    """Multi-class Brier score: mean over items of the squared distance to the one-hot label (0 best, 2 worst)."""
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(labels)), labels] = 1.0
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def calibration_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """NLL, ECE and Brier score of one set of probabilities."""
    return {
        "nll": nll(labels, probs),
        "ece": expected_calibration_error(labels, probs),
        "brier": brier_score(labels, probs),
    }
