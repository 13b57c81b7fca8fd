"""Per-item uncertainty of a combination, and the table of predictions that carries it.

For the combined probabilities p = sum_m w_m p_m (members tempered as in
:mod:`videns.ensemble.combine`), with H the entropy in nats:

- ``max_probability``: max_c p_c, the confidence of the predicted class;
- ``predictive_entropy``: H(p), total uncertainty;
- ``expected_member_entropy``: sum_m w_m H(p_m), the uncertainty members have on their own (aleatoric);
- ``mutual_information``: H(p) - sum_m w_m H(p_m) >= 0, the members' disagreement (epistemic);
- ``member_agreement``: the weight share of members whose own top class is the combination's class.
"""

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from videns.ensemble.combine import LOG_FLOOR, tempered
from videns.ensemble.conformal import set_names
from videns.io import replacing

UNCERTAINTY_COLUMNS = (
    "max_probability",
    "predictive_entropy",
    "expected_member_entropy",
    "mutual_information",
    "member_agreement",
)


def entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy in nats over the last axis; 0 log 0 counts as 0."""
    return -np.sum(probs * np.log(np.clip(probs, LOG_FLOOR, 1.0)), axis=-1)


def item_uncertainty(member_probs: np.ndarray, weights: np.ndarray, temperature: float) -> dict[str, np.ndarray]:
    """Every column of UNCERTAINTY_COLUMNS, (N,) each, from (M, N, C) member probabilities."""
    members = tempered(member_probs, temperature)  # (M, N, C)
    weights = np.asarray(weights, dtype=np.float64)
    probs = np.tensordot(weights, members, axes=1)  # (N, C)
    predicted = probs.argmax(axis=1)
    total = entropy(probs)
    expected = np.tensordot(weights, entropy(members), axes=1)  # (N,)
    votes = member_probs.argmax(axis=2) == predicted[None, :]  # (M, N); T does not move a member's top class
    return {
        "max_probability": probs.max(axis=1),
        "predictive_entropy": total,
        "expected_member_entropy": expected,
        "mutual_information": np.maximum(total - expected, 0.0),
        "member_agreement": np.tensordot(weights, votes.astype(np.float64), axes=1),
    }


def write_predictions_csv(
    path: Path,
    probs: np.ndarray,
    uncertainty: dict[str, np.ndarray],
    class_names: Sequence[str],
    labels: np.ndarray | None,
    probabilities: str,
    sets: np.ndarray,
) -> Path:
    """One row per item: index, true class (when known), predicted class, its conformal prediction set and
    the set's size, what the probabilities are (``probabilities``: raw or temperature-scaled), each class's
    probability, and the uncertainty columns."""
    path = Path(path)
    header = [
        "item",
        *(["true_class"] if labels is not None else []),
        "predicted_class",
        "prediction_set",
        "set_size",
        "probabilities",
        *(f"prob_{name}" for name in class_names),
        *UNCERTAINTY_COLUMNS,
    ]
    predicted, names, sizes = probs.argmax(axis=1), set_names(sets, class_names), sets.sum(axis=1)
    with replacing(path) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i in range(len(probs)):
            truth = [class_names[labels[i]]] if labels is not None else []
            writer.writerow(
                [
                    i,
                    *truth,
                    class_names[predicted[i]],
                    names[i],
                    int(sizes[i]),
                    probabilities,
                    *(repr(float(p)) for p in probs[i]),
                    *(repr(float(uncertainty[key][i])) for key in UNCERTAINTY_COLUMNS),
                ]
            )
    return path
