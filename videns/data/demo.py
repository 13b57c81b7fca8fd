"""Generated demo data in the features layout (videns.data.layout), for the demo config and the tests.

Class evidence is carried by the *order* of two events, so a model that reads
time beats one that averages frames: "Animation" shows event A then B,
"Flat_Content" B then A (the same frames, in another order), "Gaming" A twice
and "Natural_Content" B twice. Classes are imbalanced and lengths vary.
"""

import json
from pathlib import Path

import h5py
import numpy as np

from videns.data import layout
from videns.io import replacing

SPLIT_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}
CLASS_PROPORTIONS = (0.4, 0.3, 0.2, 0.1)
EVENT_ORDER = (("a", "b"), ("b", "a"), ("a", "a"), ("b", "b"))
EVENT_FRAMES = 3  # long enough to survive temporal subsampling
NOISE_STD = 0.5


def write_demo_data(
    out_dir: Path,
    num_videos: int = 800,
    feature_dim: int = 32,
    min_frames: int = 16,
    max_frames: int = 73,
    seed: int = 0,
) -> dict[str, Path]:
    """Write ``{train,val,test}_features_multiscale.h5`` into ``out_dir``; return their paths."""
    rng = np.random.default_rng(seed)
    events = {
        "a": rng.standard_normal(feature_dim).astype(np.float32),
        "b": rng.standard_normal(feature_dim).astype(np.float32),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, fraction in SPLIT_FRACTIONS.items():
        count = max(len(CLASS_PROPORTIONS), int(round(num_videos * fraction)))
        labels = np.sort(rng.choice(len(CLASS_PROPORTIONS), size=count, p=CLASS_PROPORTIONS))
        lengths = rng.integers(min_frames, max_frames + 1, size=count)
        features = np.zeros((count, int(lengths.max()), feature_dim), dtype=np.float32)
        for i, (label, length) in enumerate(zip(labels, lengths)):
            features[i, :length] = _video(rng, events, EVENT_ORDER[label], int(length), feature_dim)
        paths[split] = write_split(layout.split_path(out_dir, split), features, labels, lengths)
    return paths


def _video(rng, events, order, length, feature_dim) -> np.ndarray:
    frames = rng.normal(0.0, NOISE_STD, size=(length, feature_dim)).astype(np.float32)
    # First event in the first half, second in the second half, clear of the
    # edges so a circular shift of up to 3 frames cannot wrap it around.
    margin = 4
    half = length // 2
    first = rng.integers(margin, max(margin + 1, half - EVENT_FRAMES))
    second = rng.integers(half, max(half + 1, length - EVENT_FRAMES - margin))
    for start, name in ((first, order[0]), (second, order[1])):
        frames[start : start + EVENT_FRAMES] += 2.0 * events[name]
    return frames


def write_split(
    path: Path,
    features: np.ndarray,
    labels: np.ndarray,
    lengths: np.ndarray,
    class_names: tuple[str, ...] = layout.VIDEO_CLASS_NAMES,
) -> Path:
    """One split file in the layout, from padded ``features`` (N, T, D), ``labels`` and ``lengths``."""
    count, max_frames, feature_dim = features.shape
    # A half-written demo file must never look like data to a later run.
    with replacing(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset(
            layout.FEATURES, data=features, compression="gzip", compression_opts=4, chunks=(1, max_frames, feature_dim)
        )
        f.create_dataset(layout.LABELS, data=labels.astype(np.int64))
        f.create_dataset(layout.NUM_FRAMES, data=lengths.astype(np.int32))
        f.attrs[layout.ATTR_MAPPING] = json.dumps({name: i for i, name in enumerate(class_names)})
        f.attrs[layout.ATTR_NUM_VIDEOS] = count
        f.attrs[layout.ATTR_MAX_FRAMES] = max_frames
        f.attrs[layout.ATTR_FEATURE_DIM] = feature_dim
        f.attrs[layout.ATTR_MULTI_SCALE] = False
    return path


def has_demo_data(root: Path) -> bool:
    return all(layout.split_path(root, split).is_file() for split in layout.SPLITS)
