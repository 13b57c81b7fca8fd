"""Every member's probabilities over a split, from one pass that feeds each batch and view to every member."""

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from videns.data.augment import TTAMode, tta_view
from videns.data.collate import pad_collate
from videns.data.dataset import FeatureSplit
from videns.data.loaders import ignore_job_signals
from videns.errors import DataError

log = logging.getLogger(__name__)

ViewBatch = tuple[torch.Tensor, torch.Tensor]  # features (B, T_view, D), lengths (B,)


class MultiViewItems(Dataset):
    """Each test item read once and returned under every view: ``([view features], label)``."""

    def __init__(self, split: FeatureSplit, modes: Sequence[TTAMode]):
        self.split, self.modes = split, tuple(modes)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[list[np.ndarray], int]:
        features, label = self.split[index]
        return [tta_view(features, mode) for mode in self.modes], label


def multi_view_collate(items: list[tuple[list[np.ndarray], int]]) -> tuple[list[ViewBatch], torch.Tensor]:
    """One padded batch per view, and the labels (B,)."""
    num_views = len(items[0][0])
    views = []
    for v in range(num_views):
        features, lengths, labels = pad_collate([(item_views[v], label) for item_views, label in items])
        views.append((features, lengths))
    return views, labels


def build_multi_view_loader(items: MultiViewItems, batch_size: int, num_workers: int, pin_memory: bool) -> DataLoader:
    return DataLoader(
        items,
        batch_size=batch_size,
        shuffle=False,
        collate_fn=multi_view_collate,
        num_workers=num_workers,
        worker_init_fn=ignore_job_signals if num_workers else None,
        pin_memory=pin_memory,
        generator=torch.Generator(),
    )


@dataclass
class Predictions:
    """Every member's softmax probabilities over the test split, averaged over views."""

    member_probs: np.ndarray  # (M, N, C) float64
    labels: np.ndarray  # (N,) int64
    seconds: float

    @property
    def ensemble_probs(self) -> np.ndarray:
        """The softmax average over members, (N, C) float64."""
        return self.member_probs.mean(axis=0, dtype=np.float64)


@torch.no_grad()
def predict_members(
    models: Sequence[nn.Module],
    loader: DataLoader,
    num_items: int,
    num_classes: int,
    device: torch.device,
    on_batch: Callable[[int], None] | None = None,
) -> Predictions:
    """Run the loader once; every batch goes through every view of every model.

    Each member's probabilities are the mean of its softmax over the views; the
    batch's views are moved to the device once and shared by all members. The
    softmax is taken in float64 so rows sum to 1 within float64 rounding (scikit-
    learn's log_loss warns at float32 rounding after averaging).
    """
    member_probs = np.zeros((len(models), num_items, num_classes), dtype=np.float64)  # (M, N, C)
    labels = np.zeros(num_items, dtype=np.int64)
    for model in models:
        model.eval()
    start, offset = time.perf_counter(), 0
    for views, batch_labels in loader:
        size = len(batch_labels)
        _check_finite(views[0][0], offset, loader)
        on_device = [(features.to(device, non_blocking=True), lengths) for features, lengths in views]
        for m, model in enumerate(models):
            probs = torch.zeros((size, num_classes), dtype=torch.float64, device=device)  # (B, C)
            for features, lengths in on_device:
                probs += torch.softmax(model(features, lengths).double(), dim=1)
            member_probs[m, offset : offset + size] = (probs / len(on_device)).cpu().numpy()
        labels[offset : offset + size] = batch_labels.numpy()
        offset += size
        if on_batch is not None:
            on_batch(size)  # e.g. a progress bar's update
    if offset != num_items:
        raise RuntimeError(f"the loader yielded {offset} items, expected {num_items}")
    seconds = time.perf_counter() - start
    log.info(
        "evaluated %d members x %d views on %d items in %.1fs (%.0f items/s)",
        len(models),
        len(views),
        num_items,
        seconds,
        num_items / max(seconds, 1e-9),
    )
    return Predictions(member_probs, labels, seconds)


def _check_finite(features: torch.Tensor, offset: int, loader: DataLoader) -> None:
    """NaN/inf in an input would only surface later as a baffling metric error; name the item instead."""
    finite = torch.isfinite(features).flatten(1).all(dim=1)  # (B,)
    if not bool(finite.all()):
        item = offset + int(torch.nonzero(~finite)[0])
        path = getattr(getattr(loader.dataset, "split", None), "path", "test split")
        raise DataError(f"{path}: features: non-finite values (NaN or inf) in item {item}")
