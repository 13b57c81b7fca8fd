"""Classification metrics from probabilities, all computed by scikit-learn on the whole set."""

from collections.abc import Sequence

import numpy as np
from sklearn import metrics as skm

ECE_BINS = 15


def classification_metrics(labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> dict:
    """Accuracy, balanced accuracy, F1s, per-class P/R/F1, confusion matrix, NLL and ECE."""
    classes = list(range(len(class_names)))
    preds = probs.argmax(axis=1)
    precision, recall, f1, support = skm.precision_recall_fscore_support(labels, preds, labels=classes, zero_division=0)
    return {
        "accuracy": float(skm.accuracy_score(labels, preds)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(labels, preds)),
        "f1_weighted": float(skm.f1_score(labels, preds, labels=classes, average="weighted", zero_division=0)),
        "f1_macro": float(skm.f1_score(labels, preds, labels=classes, average="macro", zero_division=0)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": skm.confusion_matrix(labels, preds, labels=classes).tolist(),
        "nll": float(skm.log_loss(labels, np.clip(probs, 1e-12, 1.0), labels=classes)),
        "ece": expected_calibration_error(labels, probs),
    }


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE with equal-width confidence bins (no scikit-learn equivalent)."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    bin_of = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = bin_of == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def reliability_bins(labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Per equal-width confidence bin (the ECE's bins): mean confidence, accuracy and item count; NaN when empty."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    bin_of = np.clip(np.digitize(confidence, np.linspace(0.0, 1.0, bins + 1)[1:-1], right=True), 0, bins - 1)
    count = np.bincount(bin_of, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "confidence": np.bincount(bin_of, confidence, bins) / count,
            "accuracy": np.bincount(bin_of, correct, bins) / count,
            "count": count,
        }
