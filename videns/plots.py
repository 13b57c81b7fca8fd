"""PNG figures for people: a confusion matrix, members' training curves, reliability and risk-coverage.

Figures are built with matplotlib's object API (``Figure`` rendered by the
Agg canvas), never through ``pyplot``: nothing needs a display, no global
backend is switched under the caller, and no figure is left registered in
pyplot's global list to leak memory in a long ensemble job. Files are
written to a temporary name and renamed, so a reader never sees half a PNG.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from videns.io import replacing

logger = logging.getLogger(__name__)

HISTORY_KEYS = ("epoch", "train_loss", "val_loss", "val_accuracy")
_DPI = 120


def plot_confusion_matrix(
    matrix: np.ndarray,
    class_names: Sequence[str],
    path: Path,
    title: str = "Confusion matrix",
) -> Path:
    """Draw counts in each cell, coloured by the row-normalised fraction.

    Colour by row fraction (recall per true class) so a rare class is as
    readable as a common one; the counts keep the absolute picture.

    Args:
        matrix: ``[C, C]`` counts, rows are true classes, columns predictions.
        class_names: ``C`` names in index order.
        path: the PNG to write.
    """
    counts = np.asarray(matrix)
    num_classes = len(class_names)
    if counts.shape != (num_classes, num_classes):
        raise ValueError(f"confusion matrix shape {counts.shape} does not match {num_classes} class names")
    row_sums = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, row_sums, out=np.zeros(counts.shape), where=row_sums > 0)

    side = max(4.0, 1.1 * num_classes + 2.0)
    figure = Figure(figsize=(side + 1.0, side), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="fraction of true class")
    _annotate_cells(axes, counts, fractions)
    ticks = np.arange(num_classes)
    axes.set_xticks(ticks, labels=list(class_names), rotation=45, ha="right")
    axes.set_yticks(ticks, labels=list(class_names))
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    return _save_atomically(figure, Path(path))


def plot_training_curves(histories: Mapping[str, Sequence[Mapping]], path: Path) -> Path:
    """Two panels: validation accuracy, and train (solid) / val (dashed) loss.

    Args:
        histories: member label -> per-epoch dicts holding at least
            ``epoch``, ``train_loss``, ``val_loss`` and ``val_accuracy``.
        path: the PNG to write.
    """
    _check_histories(histories)
    figure = Figure(figsize=(12.0, 4.5), layout="constrained")
    accuracy_axes, loss_axes = figure.subplots(1, 2)
    colours = _member_colours(len(histories))
    for colour, (label, history) in zip(colours, histories.items()):
        epochs = [row["epoch"] for row in history]
        accuracy = [row["val_accuracy"] for row in history]
        accuracy_axes.plot(epochs, accuracy, color=colour, label=label)
        loss_axes.plot(epochs, [row["train_loss"] for row in history], color=colour, label=label)
        loss_axes.plot(epochs, [row["val_loss"] for row in history], color=colour, linestyle="--")
    accuracy_axes.set(title="Validation accuracy", xlabel="epoch", ylabel="accuracy")
    loss_axes.set(title="Loss (solid: train, dashed: val)", xlabel="epoch", ylabel="loss")
    for axes in (accuracy_axes, loss_axes):
        axes.grid(alpha=0.3)
    # One legend: members by colour; the line style is explained in the title.
    accuracy_axes.legend(fontsize="small", ncols=1 if len(histories) <= 8 else 2)
    return _save_atomically(figure, Path(path))


def plot_reliability_diagram(
    panels: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]], path: Path, title: str = "Reliability"
) -> Path:
    """One panel per split: a bar per non-empty confidence bin and curve, its gap to confidence shaded.

    Each bar's height is the bin's accuracy; the hatched red segment runs from
    the accuracy to the bin's mean confidence (above the bar: overconfident,
    inside it: underconfident), and the item count is written above. Curves
    (e.g. before and after temperature scaling) stand side by side within a bin.

    Args:
        panels: split title -> curve label (e.g. "before, ECE 0.13") -> the
            ``confidence``, ``accuracy`` and ``count`` arrays of
            :func:`videns.metrics.reliability_bins` over equal-width bins on
            [0, 1]; empty bins are NaN and get no bar.
        path: the PNG to write.
    """
    if not panels:
        raise ValueError("no reliability panels to plot")
    figure = Figure(figsize=(6.0 * len(panels), 5.0), layout="constrained")
    axes_row = np.atleast_1d(figure.subplots(1, len(panels)))
    for axes, (split, curves) in zip(axes_row, panels.items()):
        _reliability_panel(axes, curves)
        axes.set(
            title=f"{title}: {split}",
            xlabel="confidence (max probability)",
            ylabel="accuracy",
            xlim=(0.0, 1.0),
            ylim=(0.0, 1.12),
        )
        axes.legend(fontsize="small", loc="upper left")
    return _save_atomically(figure, Path(path))


def plot_risk_coverage(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str = "Risk-coverage"
) -> Path:
    """One line per ranking: error rate among the kept items against the share of items kept.

    Args:
        curves: label (e.g. "max probability, AURC 0.031") -> ``(coverage, risk)``
            of :func:`videns.ensemble.selective.risk_coverage`.
        path: the PNG to write.
    """
    from videns.ensemble.selective import COVERAGES

    if not curves:
        raise ValueError("no risk-coverage curves to plot")
    figure = Figure(figsize=(6.5, 4.8), layout="constrained")
    axes = figure.add_subplot()
    for colour, (label, (coverage, risk)) in zip(_member_colours(len(curves)), curves.items()):
        axes.plot(coverage, risk, color=colour, label=label)
    for mark in COVERAGES:
        # The coverages the report quotes accuracy at, so the figure and the numbers can be read together.
        axes.axvline(mark, color="grey", linestyle=":", linewidth=1.0)
        axes.text(
            mark,
            1.0,
            f"{mark:g}",
            transform=axes.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize="x-small",
            color="grey",
        )
    axes.set(
        title=title,
        xlabel="coverage (share of items answered, most confident first)",
        ylabel="risk (error rate among answered)",
        xlim=(0.0, 1.0),
    )
    axes.set_ylim(bottom=0.0)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="upper left")
    return _save_atomically(figure, Path(path))


def _reliability_panel(axes, curves: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    axes.plot([0.0, 1.0], [0.0, 1.0], color="grey", linestyle=":", label="perfectly calibrated")
    bin_width = 1.0 / _bin_count(curves)
    # Curves share a bin side by side; a small margin keeps neighbouring bins apart.
    bar_width = 0.9 * bin_width / max(1, len(curves))
    for number, (colour, (label, bins)) in enumerate(zip(_member_colours(len(curves)), curves.items())):
        count = np.asarray(bins["count"], dtype=np.float64)
        filled = count > 0
        centres = (np.flatnonzero(filled) + 0.05) * bin_width + (number + 0.5) * bar_width
        accuracy = np.asarray(bins["accuracy"], dtype=np.float64)[filled]
        confidence = np.asarray(bins["confidence"], dtype=np.float64)[filled]
        axes.bar(centres, accuracy, width=bar_width, color=colour, edgecolor="black", linewidth=0.4, label=label)
        axes.bar(
            centres,
            confidence - accuracy,
            bottom=accuracy,
            width=bar_width,
            color=(0.85, 0.1, 0.1, 0.25),
            edgecolor=(0.7, 0.0, 0.0, 0.8),
            hatch="///",
            linewidth=0.4,
            label="gap to mean confidence" if number == len(curves) - 1 else None,
        )  # listed after the curves
        _write_counts(axes, centres, np.maximum(accuracy, confidence), count[filled], rotate=len(curves) > 1)
    axes.grid(alpha=0.3, axis="y")


def _write_counts(axes, centres: np.ndarray, tops: np.ndarray, counts: np.ndarray, rotate: bool) -> None:
    # Narrow side-by-side bars leave no room for horizontal text; rotated counts stay inside their bar's column.
    for centre, top, value in zip(centres, tops, counts):
        axes.text(
            centre, top + 0.01, f"{int(value)}", ha="center", va="bottom", fontsize=6.5, rotation=90 if rotate else 0
        )


def _bin_count(curves: Mapping[str, Mapping[str, np.ndarray]]) -> int:
    lengths = {len(bins["count"]) for bins in curves.values()}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"reliability curves must share one non-zero number of bins, got {sorted(lengths)}")
    return lengths.pop()


def _annotate_cells(axes, counts: np.ndarray, fractions: np.ndarray) -> None:
    for row, col in np.ndindex(counts.shape):
        # White text on dark cells, black on light ones, so every count reads.
        colour = "white" if fractions[row, col] > 0.5 else "black"
        value = counts[row, col]
        text = f"{int(value)}" if float(value).is_integer() else f"{value:.3g}"
        axes.text(col, row, text, ha="center", va="center", color=colour)


def _check_histories(histories: Mapping[str, Sequence[Mapping]]) -> None:
    if not histories:
        raise ValueError("no training histories to plot")
    problems = []
    for label, history in histories.items():
        for number, row in enumerate(history):
            missing = [key for key in HISTORY_KEYS if key not in row]
            if missing:
                problems.append(f"{label} epoch row {number}: missing {missing}")
                break
    if problems:
        raise ValueError("bad training histories: " + "; ".join(problems))


def _member_colours(count: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(index % cmap.N) for index in range(count)]


def _save_atomically(figure: Figure, path: Path) -> Path:
    """Render to a temporary file beside ``path``, then rename over it."""
    FigureCanvasAgg(figure)  # attach a non-interactive canvas; no display needed
    try:
        with replacing(path) as temporary, open(temporary, "wb") as handle:
            figure.savefig(handle, format="png", dpi=_DPI)
    finally:
        figure.clear()  # free the artists now rather than at garbage collection
    logger.debug("wrote %s", path)
    return path
