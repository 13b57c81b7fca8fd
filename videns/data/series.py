"""Generated univariate time series shaped like small real sets: the class is in the waveform's shape.

Raw units (a large offset and spread, as a sensor writes them), random phase,
period and length, and noise: mean/std features cannot tell the shapes apart,
and a model that sees only each step's sign or its raw scale struggles.
"""

from pathlib import Path

import numpy as np

from videns.data import layout
from videns.data.demo import write_split

SHAPES = ("sine", "square", "sawtooth", "triangle", "pulse", "chirp")
OFFSET, SCALE, NOISE = 120.0, 40.0, 0.25
SPLIT_SHARES = {"train": 0.6, "val": 0.2, "test": 0.2}


def write_series_data(
    out_dir: Path, num_series: int = 500, min_length: int = 48, max_length: int = 128, seed: int = 0
) -> dict[str, Path]:
    """Write train/val/test splits (60/20/20) of ``num_series`` series into ``out_dir``."""
    rng = np.random.default_rng(seed)
    counts = _split_counts(num_series)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    paths = {}
    for split in layout.SPLITS:
        labels = np.arange(counts[split]) % len(SHAPES)
        rng.shuffle(labels)
        lengths = rng.integers(min_length, max_length + 1, size=counts[split])
        features = np.zeros((counts[split], max_length, 1), dtype=np.float32)  # (N, T, 1)
        for i, (label, length) in enumerate(zip(labels, lengths)):
            features[i, :length, 0] = _series(rng, SHAPES[label], int(length))
        paths[split] = write_split(layout.split_path(Path(out_dir), split), features, labels, lengths, SHAPES)
    return paths


def _split_counts(total: int) -> dict[str, int]:
    counts = {split: int(round(total * share)) for split, share in SPLIT_SHARES.items()}
    counts["train"] = total - counts["val"] - counts["test"]
    return counts


def _series(rng: np.random.Generator, shape: str, length: int) -> np.ndarray:
    """One series: ``shape`` with random period, phase and amplitude, in raw units."""
    period = rng.uniform(12.0, 32.0)
    phase = rng.uniform(0.0, 1.0)
    cycles = np.arange(length) / period + phase  # (T,)
    wave = _wave(shape, cycles, length)
    amplitude = rng.uniform(0.7, 1.3)
    return (OFFSET + SCALE * (amplitude * wave + NOISE * rng.standard_normal(length))).astype(np.float32)


def _wave(shape: str, cycles: np.ndarray, length: int) -> np.ndarray:
    fraction = cycles % 1.0
    if shape == "sine":
        return np.sin(2 * np.pi * cycles)
    if shape == "square":
        return np.where(fraction < 0.5, 1.0, -1.0)
    if shape == "sawtooth":
        return 2.0 * fraction - 1.0
    if shape == "triangle":
        return 1.0 - 4.0 * np.abs(fraction - 0.5)
    if shape == "pulse":  # short spikes on a flat line
        return np.where(fraction < 0.15, 1.0, -0.2)
    # chirp: the frequency doubles over the series
    t = np.arange(length) / length
    return np.sin(2 * np.pi * (cycles[0] + (cycles[-1] - cycles[0]) * (t + t**2) / 2))
