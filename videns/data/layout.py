"""The on-disk layout of a feature split, shared by readers, writers and converters.

One HDF5 file per split, ``{split}_features_multiscale.h5``, holding:

- ``features``: float32 ``[N, max_frames, D]``, zero-padded after each item's length
- ``labels``: int64 ``[N]``
- ``num_frames``: int32 ``[N]``, the real length of each item
- attribute ``category_mapping``: JSON object, class name -> index
- attributes ``num_videos``, ``max_frames``, ``feature_dim`` (ints), ``multi_scale`` (bool)
"""

from pathlib import Path

SPLITS = ("train", "val", "test")
FEATURES = "features"
LABELS = "labels"
NUM_FRAMES = "num_frames"
ATTR_MAPPING = "category_mapping"
ATTR_NUM_VIDEOS = "num_videos"
ATTR_MAX_FRAMES = "max_frames"
ATTR_FEATURE_DIM = "feature_dim"
ATTR_MULTI_SCALE = "multi_scale"

# The four video content classes of the reference data, in index order.
VIDEO_CLASS_NAMES = ("Animation", "Flat_Content", "Gaming", "Natural_Content")


def split_path(root: Path, split: str) -> Path:
    """Path of one split's file inside a data folder."""
    return Path(root) / f"{split}_features_multiscale.h5"
