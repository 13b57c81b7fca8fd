"""What validation decides and test only reports: collapse flags, every combination, the temperature, uncertainty.

Nothing here reads test labels to choose anything: flags, weights and
temperatures come from the validation predictions; test labels only score them.
"""

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from videns.ensemble.calibration import at_bound, calibration_metrics, fit_temperature
from videns.ensemble.collapse import MAD_FACTOR, MIN_MARGIN, flag_members
from videns.ensemble.combine import COMBINATIONS, Combination, combination_weights, combine
from videns.ensemble.predict import Predictions
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


def choose_on_validation(seeds: Sequence[int], val: Predictions, test: Predictions, class_names: Sequence[str],
                         chosen: Combination) -> tuple[dict[str, Any], Chosen]:
    """The report's trust sections, and the chosen combination's test arrays."""
    flags = flag_members(list(seeds), val.member_probs, val.labels)
    for flag in flags:
        if flag.flagged:
            log.warning("member seed %d is flagged: %s", flag.seed, flag.reason)
    flagged = [f.flagged for f in flags]
    combinations = {}
    for name in COMBINATIONS:
        weights = combination_weights(name, val.member_probs, val.labels, flagged)
        temperature = fit_temperature(val.member_probs, weights, val.labels)
        combinations[name] = _combination_entry(seeds, weights, temperature, val, test, class_names)
    entry = combinations[chosen]
    weights, temperature = np.array(entry["weight_list"]), entry["temperature"]
    arrays = Chosen(chosen, weights, temperature, combine(test.member_probs, weights),
                    combine(test.member_probs, weights, temperature),
                    item_uncertainty(test.member_probs, weights, temperature))
    sections = {
        "collapse_rule": f"flagged when validation accuracy < median - max({MIN_MARGIN}, {MAD_FACTOR:g} x MAD) "
                         "of the members', or <= the validation share of the majority class",
        "flags": [vars(f) for f in flags],
        "flagged_in_combination": [f.seed for f, w in zip(flags, weights) if f.flagged and w > 0],
        "combination": {"chosen": chosen, "weights": entry["weights"], "temperature": temperature},
        "combinations": combinations,
        "calibration": {"temperature": temperature, "at_bound": at_bound(temperature), "validation": entry["validation"], "test": entry["test_calibration"]},
        "most_uncertain": _top_items(arrays, test.labels, class_names, wrong_only=False),
        "confidently_wrong": _top_items(arrays, test.labels, class_names, wrong_only=True),
    }
    return sections, arrays


def _combination_entry(seeds: Sequence[int], weights: np.ndarray, temperature: float, val: Predictions,
                       test: Predictions, class_names: Sequence[str]) -> dict[str, Any]:
    before = {split: combine(p.member_probs, weights) for split, p in (("validation", val), ("test", test))}
    after = {split: combine(p.member_probs, weights, temperature) for split, p in (("validation", val), ("test", test))}
    labels = {"validation": val.labels, "test": test.labels}
    calibration = {split: {"before": calibration_metrics(labels[split], before[split]),
                           "after": calibration_metrics(labels[split], after[split])} for split in labels}
    return {"weights": {str(s): float(w) for s, w in zip(seeds, weights)}, "weight_list": weights.tolist(),
            "temperature": temperature,
            "validation": calibration["validation"],
            "validation_accuracy": float(np.mean(before["validation"].argmax(axis=1) == val.labels)),
            "test": classification_metrics(test.labels, before["test"], class_names),
            "test_calibration": calibration["test"]}


def _top_items(arrays: Chosen, labels: np.ndarray, class_names: Sequence[str], wrong_only: bool) -> list[dict]:
    predicted = arrays.calibrated.argmax(axis=1)
    if wrong_only:
        candidates = np.flatnonzero(predicted != labels)
        order = candidates[np.argsort(-arrays.uncertainty["max_probability"][candidates], kind="stable")]
    else:
        order = np.argsort(-arrays.uncertainty["predictive_entropy"], kind="stable")
    return [{"item": int(i), "true_class": class_names[labels[i]], "predicted_class": class_names[predicted[i]],
             **{key: float(values[i]) for key, values in arrays.uncertainty.items()}} for i in order[:TOP_ITEMS]]
