"""What validation decides and test only reports: collapse flags, every combination, the temperature,
conformal prediction sets, uncertainty and selective prediction.

Nothing here reads test labels to choose anything: flags, weights, temperatures
and the sets' thresholds come from the validation predictions; test labels only
score them.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from videns.ensemble.calibration import TemperatureChoice, calibration_metrics, choose_temperature, which_bound
from videns.ensemble.collapse import MAD_FACTOR, MIN_MARGIN, flag_members
from videns.ensemble.combine import COMBINATIONS, Combination, combination_weights, combine
from videns.ensemble.conformal import prediction_sets, set_metrics, set_names
from videns.ensemble.member_probs import Predictions
from videns.ensemble.selective import selective_report
from videns.ensemble.uncertainty import item_uncertainty
from videns.metrics import classification_metrics

log = logging.getLogger(__name__)

TOP_ITEMS = 10  # rows in each of report.md's item tables


@dataclass
class Chosen:
    """The combination the report stands for, with its arrays over the test split."""

    name: Combination
    weights: np.ndarray  # (M,)
    temperature: float
    probs: np.ndarray  # (N, C) before temperature
    calibrated: np.ndarray  # (N, C) after
    uncertainty: dict[str, np.ndarray]
    sets: np.ndarray  # (N, C) bool: the conformal prediction sets
    probabilities: str  # what ``calibrated`` holds, for every table that prints it


def probabilities_label(temperature: float) -> str:
    """ "temperature-scaled (T = 0.873)" or "raw (T = 1)": said beside every printed probability."""
    return "raw (T = 1)" if temperature == 1.0 else f"temperature-scaled (T = {temperature:.3f})"


def choose_on_validation(
    seeds: Sequence[int | str],
    val: Predictions,
    test: Predictions,
    class_names: Sequence[str],
    chosen: Combination,
    coverage: float,
    mondrian: bool,
    max_members: int | None = None,
) -> tuple[dict[str, Any], Chosen]:
    """The report's trust sections, and the chosen combination's test arrays.

    ``seeds`` name the members (a library names its candidates instead); ``max_members`` caps the distinct
    members the greedy combination may pick.
    """
    flags = flag_members(list(seeds), val.member_probs, val.labels)
    for flag in flags:
        if flag.flagged:
            log.warning(
                "member %s is flagged: %s",
                f"seed {flag.seed}" if isinstance(flag.seed, int) else flag.seed,
                flag.reason,
            )
    flagged = [f.flagged for f in flags]
    combinations, choices = {}, {}
    for name in COMBINATIONS:
        weights = combination_weights(name, val.member_probs, val.labels, flagged, max_members)
        choices[name] = choose_temperature(val.member_probs, weights, val.labels)
        combinations[name] = _combination_entry(seeds, weights, choices[name], val, test, class_names)
    entry, choice = combinations[chosen], choices[chosen]
    weights = np.array(entry["weight_list"])
    arrays = _chosen_arrays(chosen, weights, choice, val, test, coverage, mondrian)
    sections = {
        "collapse_rule": f"flagged when validation accuracy < median - max({MIN_MARGIN}, {MAD_FACTOR:g} x MAD) "
        "of the members', or <= the validation share of the majority class",
        "flags": [vars(f) for f in flags],
        "flagged_in_combination": [f.seed for f, w in zip(flags, weights) if f.flagged and w > 0],
        "combination": {"chosen": chosen, "weights": entry["weights"], "temperature": choice.temperature},
        "combinations": combinations,
        "calibration": {
            **choice.as_dict(),
            "at_bound": which_bound(choice.fitted) is not None,
            "probabilities": arrays.probabilities,
            "validation": entry["validation"],
            "test": entry["test_calibration"],
        },
        "conformal": _conformal_section(arrays.sets, test.labels, class_names, coverage, mondrian, len(val.labels)),
        "selective": {
            "probabilities": arrays.probabilities,
            **selective_report(arrays.calibrated, arrays.uncertainty["mutual_information"], test.labels),
        },
        "most_uncertain": _top_items(arrays, test.labels, class_names, wrong_only=False),
        "confidently_wrong": _top_items(arrays, test.labels, class_names, wrong_only=True),
    }
    return sections, arrays


def _chosen_arrays(
    name: Combination,
    weights: np.ndarray,
    choice: TemperatureChoice,
    val: Predictions,
    test: Predictions,
    coverage: float,
    mondrian: bool,
) -> Chosen:
    raw = combine(test.member_probs, weights)
    # Sets come from the raw combination: the temperature was fitted on the same validation items the
    # sets are calibrated on, and a score that saw its calibration items would void the coverage guarantee.
    sets = prediction_sets(combine(val.member_probs, weights), val.labels, raw, coverage, mondrian)
    return Chosen(
        name,
        weights,
        choice.temperature,
        raw,
        combine(test.member_probs, weights, choice.temperature),
        item_uncertainty(test.member_probs, weights, choice.temperature),
        sets,
        probabilities_label(choice.temperature),
    )


def _conformal_section(
    sets: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    coverage: float,
    mondrian: bool,
    calibration_items: int,
) -> dict[str, Any]:
    return {
        "coverage_requested": coverage,
        "mondrian": mondrian,
        "calibration_items": calibration_items,
        "score": "1 - the raw combination's probability of the class (split conformal, calibrated on validation)",
        "test": set_metrics(sets, labels, class_names),
    }


def _combination_entry(
    seeds: Sequence[int],
    weights: np.ndarray,
    choice: TemperatureChoice,
    val: Predictions,
    test: Predictions,
    class_names: Sequence[str],
) -> dict[str, Any]:
    temperature = choice.temperature
    before = {split: combine(p.member_probs, weights) for split, p in (("validation", val), ("test", test))}
    after = {split: combine(p.member_probs, weights, temperature) for split, p in (("validation", val), ("test", test))}
    labels = {"validation": val.labels, "test": test.labels}
    calibration = {
        split: {
            "before": calibration_metrics(labels[split], before[split]),
            "after": calibration_metrics(labels[split], after[split]),
        }
        for split in labels
    }
    return {
        "weights": {str(s): float(w) for s, w in zip(seeds, weights)},
        "weight_list": weights.tolist(),
        "temperature": temperature,
        "temperature_fit": choice.as_dict(),
        "validation": calibration["validation"],
        "validation_accuracy": float(np.mean(before["validation"].argmax(axis=1) == val.labels)),
        "test": classification_metrics(test.labels, before["test"], class_names),
        "test_calibration": calibration["test"],
    }


def _top_items(arrays: Chosen, labels: np.ndarray, class_names: Sequence[str], wrong_only: bool) -> list[dict]:
    predicted = arrays.calibrated.argmax(axis=1)
    if wrong_only:
        candidates = np.flatnonzero(predicted != labels)
        order = candidates[np.argsort(-arrays.uncertainty["max_probability"][candidates], kind="stable")]
    else:
        order = np.argsort(-arrays.uncertainty["predictive_entropy"], kind="stable")
    names = set_names(arrays.sets[order[:TOP_ITEMS]], class_names)
    return [
        {
            "item": int(i),
            "true_class": class_names[labels[i]],
            "predicted_class": class_names[predicted[i]],
            "prediction_set": names[rank],
            **{key: float(values[i]) for key, values in arrays.uncertainty.items()},
        }
        for rank, i in enumerate(order[:TOP_ITEMS])
    ]
