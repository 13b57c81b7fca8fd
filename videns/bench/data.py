"""The bench's data, shaped like the reference video features: one all-73-frames dataset and one variable-length mix."""

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from videns.bench.profiles import Profile
from videns.data import layout
from videns.data.demo import write_demo_data
from videns.io import read_json, write_json_atomically

log = logging.getLogger(__name__)

MARKER = "bench-data.json"
FIXED, MIXED = "fixed", "mixed"


@dataclass(frozen=True)
class BenchData:
    """One generated dataset: where it is and what its training split holds."""

    name: str
    root: Path
    feature_dim: int
    max_frames: int
    train_lengths: np.ndarray

    def path(self, split: str) -> Path:
        return layout.split_path(self.root, split)

    def num_items(self, split: str) -> int:
        with h5py.File(self.path(split), "r") as f:
            return int(f[layout.LABELS].shape[0])

    def describe(self) -> dict[str, Any]:
        sizes = {split: os.path.getsize(self.path(split)) for split in layout.SPLITS}
        counts = {split: self.num_items(split) for split in layout.SPLITS}
        lengths = self.train_lengths
        return {
            "root": str(self.root),
            "items": counts,
            "feature_dim": self.feature_dim,
            "max_frames": self.max_frames,
            "train_lengths": {"min": int(lengths.min()), "mean": float(lengths.mean()), "max": int(lengths.max())},
            "file_mb": {k: v / 1e6 for k, v in sizes.items()},
            "layout": "features float32 [N, max_frames, D] zero-padded, gzip level 4, "
            "one item per chunk; labels int64; num_frames int32",
        }


def prepare_data(profile: Profile, work_dir: Path) -> dict[str, BenchData]:
    """Generate (or reuse, when the same profile wrote it before) both datasets under ``work_dir/data``."""
    specs = {FIXED: profile.max_frames, MIXED: profile.mixed_min_frames}
    return {
        name: _dataset(profile, Path(work_dir) / "data" / f"{profile.name}-{name}", name, min_frames)
        for name, min_frames in specs.items()
    }


def _dataset(profile: Profile, root: Path, name: str, min_frames: int) -> BenchData:
    params = {
        "num_videos": profile.num_videos,
        "feature_dim": profile.feature_dim,
        "min_frames": min_frames,
        "max_frames": profile.max_frames,
        "seed": 0,
    }
    marker = root / MARKER
    if read_json(marker) != params:
        log.info("writing %s bench data into %s", name, root)
        write_demo_data(root, **params)
        write_json_atomically(marker, params)
    with h5py.File(layout.split_path(root, "train"), "r") as f:
        lengths = f[layout.NUM_FRAMES][()].astype(np.int64)
        max_frames = int(f[layout.FEATURES].shape[1])
    return BenchData(name, root, profile.feature_dim, max_frames, lengths)
