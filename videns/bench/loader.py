"""Loader throughput: our reader against the reference one, over the same training split.

Both loaders deliver padded batches of the training split in a shuffled order,
without augmentation, with the same batch size and worker count, taking turns
epoch by epoch. "MB/s" counts
the real (unpadded) float32 frames delivered, the same for both. Ours is timed
once its split is in RAM; the preload is timed apart and also reported folded
into a single epoch, where it costs about one reference epoch.
"""

import logging
from collections.abc import Iterable
from typing import Any

import torch

from videns.bench.baseline import ReferenceDataset, build_reference_loader
from videns.bench.data import BenchData
from videns.bench.measure import Stopwatch, ratio, time_interleaved
from videns.data.dataset import FeatureSplit
from videns.data.loaders import TrainItems, build_train_loader
from videns.data.sampling import EpochBatches, EpochOrder

log = logging.getLogger(__name__)
PRELOAD_ALL = 1 << 62


def measure_loader(
    data: BenchData, batch_size: int, num_workers: int, bucket_window: int, repeats: int, seed: int = 0
) -> dict[str, Any]:
    """Reference, ours without preload and ours with preload, taking turns; speedups of ours over reference."""
    with Stopwatch() as preload:
        split = FeatureSplit(data.path("train"), preload_bytes=PRELOAD_ALL)
    epochs = {
        "reference": _counted(_reference_epoch(data, batch_size, num_workers, seed)),
        "ours_no_preload": _counted(
            _ours_epoch(FeatureSplit(data.path("train")), batch_size, num_workers, bucket_window, seed)
        ),
        "ours": _counted(_ours_epoch(split, batch_size, num_workers, bucket_window, seed)),
    }
    timings = time_interleaved({name: run for name, (run, _) in epochs.items()}, repeats=repeats)
    results = {name: _throughput(timings[name], counts) for name, (_, counts) in epochs.items()}
    results["ours"]["preload_s"] = preload.seconds
    reference_s, ours_s = results["reference"]["epoch"]["median_s"], results["ours"]["epoch"]["median_s"]
    return {
        "workload": {
            "model": "none (reading only)",
            "batch": batch_size,
            "workers": num_workers,
            "device": "cpu",
            "data": data.name,
            "items": len(data.train_lengths),
            "bucket_window": bucket_window,
        },
        **results,
        "loader_speedup": ratio(reference_s, ours_s),
        "loader_speedup_no_preload": ratio(reference_s, results["ours_no_preload"]["epoch"]["median_s"]),
        "loader_speedup_first_epoch_with_preload": ratio(reference_s, preload.seconds + ours_s),
    }


def _reference_epoch(data: BenchData, batch_size: int, num_workers: int, seed: int):
    dataset = ReferenceDataset(data.path("train"))
    loader = build_reference_loader(
        dataset, batch_size, num_workers, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    return lambda: _drain(loader)


def _ours_epoch(split: FeatureSplit, batch_size: int, num_workers: int, bucket_window: int, seed: int):
    batches = EpochBatches(EpochOrder(split.labels, seed, weighted=False), split.lengths, batch_size, bucket_window)
    loader = build_train_loader(TrainItems(split, seed, augment_items=False), batches, num_workers, pin_memory=False)
    epoch = iter(range(1 << 30))

    def run() -> dict[str, int]:
        batches.set_position(next(epoch))
        return _drain(loader)

    return run


def _drain(loader: Iterable) -> dict[str, int]:
    """Read one epoch; count items, real frames and padded frames."""
    items = frames = padded = 0
    for features, lengths, _labels in loader:
        items += len(lengths)
        frames += int(lengths.sum())
        padded += features.shape[0] * features.shape[1]
    return {"items": items, "frames": frames, "padded_frames": padded, "feature_dim": features.shape[2]}


def _counted(run_epoch) -> tuple:
    """``run_epoch`` as a timed callable, and the dict its last epoch's counts land in."""
    counts: dict[str, int] = {}
    return (lambda: counts.update(run_epoch())), counts


def _throughput(timing: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
    seconds = timing["median_s"]
    payload_mb = counts["frames"] * counts["feature_dim"] * 4 / 1e6
    return {
        "epoch": timing,
        "sequences_per_s": counts["items"] / seconds,
        "mb_per_s": payload_mb / seconds,
        "padding_overhead": counts["padded_frames"] / counts["frames"] - 1.0,
    }
