"""Timing helpers: warm-up runs, repeats, the median, and device synchronisation."""

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so a timer measures it (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_repeats(
    fn: Callable[[], Any], repeats: int, warmup: int = 1, device: torch.device | None = None
) -> dict[str, Any]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed; seconds as median/min/max/all."""
    device = device or torch.device("cpu")
    for _ in range(warmup):
        fn()
    synchronize(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return summarize(seconds, warmup=warmup)


def summarize(seconds: list[float], warmup: int = 0) -> dict[str, Any]:
    """Median, min and max of timed runs, with the raw values."""
    return {
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "max_s": max(seconds),
        "repeats": len(seconds),
        "warmup": warmup,
        "all_s": [round(s, 6) for s in seconds],
    }


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when the denominator is not positive."""
    return numerator / denominator if denominator > 0 else float("nan")


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds``."""

    def __init__(self, device: torch.device | None = None):
        self.device = device or torch.device("cpu")
        self.seconds = float("nan")

    def __enter__(self) -> "Stopwatch":
        synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._start


def time_interleaved(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1, device: torch.device | None = None
) -> dict[str, dict[str, Any]]:
    """Like :func:`time_repeats` for several functions, taken in turns (A B C A B C ...).

    On a shared machine the load drifts; taking turns spreads that drift over
    every function instead of charging it to whichever ran during a busy spell.
    """
    device = device or torch.device("cpu")
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    for round_index in range(warmup + repeats):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            if round_index >= warmup:
                seconds[name].append(time.perf_counter() - start)
    return {name: summarize(values, warmup=warmup) for name, values in seconds.items()}
