"""Temperature scaling of a combination, fitted on validation NLL, and the calibration metrics around it."""

import numpy as np
from scipy.optimize import minimize_scalar

from videns.ensemble.combine import combine, nll
from videns.metrics import expected_calibration_error

# Bounds on log T: temperatures from 1/20 to 20 cover any realistic miscalibration.
LOG_T_BOUNDS = (-np.log(20.0), np.log(20.0))
CALIBRATION_METRICS = ("nll", "ece", "brier")


def fit_temperature(member_probs: np.ndarray, weights: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the combination's NLL on these (validation) items."""
    result = minimize_scalar(lambda log_t: nll(labels, combine(member_probs, weights, float(np.exp(log_t)))),
                             bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
    return float(np.exp(result.x))


def at_bound(temperature: float) -> bool:
    """True when the fit stopped at a bound: validation is (nearly) separable, so NLL keeps falling as T -> 0."""
    return bool(np.min(np.abs(np.log(temperature) - np.array(LOG_T_BOUNDS))) < 1e-3)


def brier_score(labels: np.ndarray, probs: np.ndarray) -> float:
    """Multi-class Brier score: mean over items of the squared distance to the one-hot label (0 best, 2 worst)."""
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(labels)), labels] = 1.0
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def calibration_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """NLL, ECE and Brier score of one set of probabilities."""
    return {"nll": nll(labels, probs), "ece": expected_calibration_error(labels, probs),
            "brier": brier_score(labels, probs)}
