"""PNG figures: written, valid, and never left half-written at a temp path."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from videns.ensemble.selective import aurc, risk_coverage
from videns.metrics import ECE_BINS, reliability_bins
from videns.plots import (
    plot_confusion_matrix,
    plot_reliability_diagram,
    plot_risk_coverage,
    plot_training_curves,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASS_NAMES = ("Animation", "Flat_Content", "Gaming", "Natural_Content")


def history(offset: float) -> list[dict]:
    return [
        {"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e + offset, "val_accuracy": 0.5 + 0.04 * e}
        for e in range(1, 11)
    ]


def assert_valid_png_and_no_leftovers(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file


def test_confusion_matrix_writes_a_valid_png(tmp_path: Path) -> None:
    matrix = np.array([[50, 2, 1, 0], [3, 40, 0, 1], [0, 0, 70, 5], [4, 0, 2, 0]])
    path = plot_confusion_matrix(matrix, CLASS_NAMES, tmp_path / "figs" / "confusion.png")
    assert path == tmp_path / "figs" / "confusion.png"
    assert_valid_png_and_no_leftovers(path)


def test_confusion_matrix_with_an_empty_row_still_plots(tmp_path: Path) -> None:
    matrix = np.array([[5, 1], [0, 0]])  # a class absent from the test split
    assert_valid_png_and_no_leftovers(plot_confusion_matrix(matrix, CLASS_NAMES[:2], tmp_path / "cm.png"))


def test_confusion_matrix_rejects_names_that_do_not_match(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="class names"):
        plot_confusion_matrix(np.eye(3), CLASS_NAMES, tmp_path / "cm.png")
    assert not list(tmp_path.iterdir())


def test_training_curves_write_a_valid_png_over_an_old_one(tmp_path: Path) -> None:
    path = tmp_path / "curves.png"
    path.write_bytes(b"stale")
    plot_training_curves({"seed_1": history(0.0), "seed_2": history(0.1)}, path)
    assert_valid_png_and_no_leftovers(path)


def test_training_curves_name_the_member_with_a_missing_key(tmp_path: Path) -> None:
    bad = [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.0}]
    with pytest.raises(ValueError, match="seed_2.*val_accuracy"):
        plot_training_curves({"seed_1": history(0.0), "seed_2": bad}, tmp_path / "curves.png")


def test_reliability_bins_match_accuracy_and_confidence_per_bin() -> None:
    probs = np.array([[0.95, 0.05], [0.94, 0.06], [0.55, 0.45], [0.4, 0.6]])
    labels = np.array([0, 1, 0, 1])
    bins = reliability_bins(labels, probs)
    assert bins["count"].sum() == 4 and len(bins["count"]) == ECE_BINS
    top = ECE_BINS - 1  # confidences 0.95 and 0.94 share the last bin: one right, one wrong
    assert bins["count"][top] == 2 and bins["accuracy"][top] == 0.5 and bins["confidence"][top] == pytest.approx(0.945)
    assert np.isnan(bins["accuracy"][0])  # an empty bin is NaN, not 0


def test_reliability_diagram_writes_a_valid_png_with_empty_bins(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=200)
    labels = rng.integers(0, 4, size=200)
    sharper = probs**2 / (probs**2).sum(axis=1, keepdims=True)
    curves = {"before": reliability_bins(labels, probs), "after": reliability_bins(labels, sharper)}
    path = plot_reliability_diagram({"validation": curves, "test": curves}, tmp_path / "reliability.png")
    assert_valid_png_and_no_leftovers(path)
    with pytest.raises(ValueError):
        plot_reliability_diagram({}, tmp_path / "none.png")


def test_reliability_diagram_with_one_non_empty_bin_draws(tmp_path: Path) -> None:
    probs = np.array([[0.97, 0.03], [0.96, 0.04], [0.99, 0.01]])  # every item in the top bin
    bins = reliability_bins(np.array([0, 1, 0]), probs)
    assert int(np.sum(bins["count"] > 0)) == 1
    path = plot_reliability_diagram({"test": {"before": bins}}, tmp_path / "one_bin.png")
    assert_valid_png_and_no_leftovers(path)


def test_reliability_diagram_refuses_curves_with_different_bins(tmp_path: Path) -> None:
    probs = np.array([[0.7, 0.3], [0.2, 0.8]])
    labels = np.array([0, 0])
    curves = {"15 bins": reliability_bins(labels, probs), "10 bins": reliability_bins(labels, probs, bins=10)}
    with pytest.raises(ValueError, match="bins"):
        plot_reliability_diagram({"test": curves}, tmp_path / "mixed.png")
    assert not list(tmp_path.iterdir())


def test_risk_coverage_writes_a_valid_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    confidence = rng.random(300)
    correct = rng.random(300) < confidence
    disagreement = rng.random(300)
    curves = {
        f"max probability, AURC {aurc(confidence, correct):.3f}": risk_coverage(confidence, correct),
        f"mutual information, AURC {aurc(-disagreement, correct):.3f}": risk_coverage(-disagreement, correct),
    }
    path = plot_risk_coverage(curves, tmp_path / "figs" / "risk_coverage.png", title="Risk-coverage: test")
    assert path == tmp_path / "figs" / "risk_coverage.png"
    assert path.stat().st_size > 1000
    assert_valid_png_and_no_leftovers(path)
    with pytest.raises(ValueError):
        plot_risk_coverage({}, tmp_path / "none.png")
