"""Validate a data folder before any training and describe what it holds.

Every problem is reported as one :class:`DataError` line naming the file, the
key and the problem, so a batch job fails in seconds instead of hours in.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from videns.data import layout
from videns.data.reading import reading
from videns.errors import DataError

# Items scanned at once for non-finite values: bounds memory on large splits.
_FINITE_CHECK_ITEMS = 256
# numpy dtype kinds each dataset may hold: real numbers for features, integers for the rest.
_DTYPE_KINDS = {
    layout.FEATURES: ("fiu", "numbers"),
    layout.LABELS: ("iu", "integer class ids"),
    layout.NUM_FRAMES: ("iu", "integer lengths"),
}


@dataclass(frozen=True)
class SplitInfo:
    """What one split file holds."""

    path: Path
    num_items: int
    max_frames: int
    feature_dim: int
    class_counts: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """Bytes the padded float32 features take in RAM."""
        return self.num_items * self.max_frames * self.feature_dim * 4


@dataclass(frozen=True)
class DatasetInfo:
    """Facts read from the files that the model and loss must agree with."""

    feature_dim: int
    class_names: tuple[str, ...]
    splits: dict[str, SplitInfo]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def inspect_dataset(root: Path, splits=layout.SPLITS, check_finite: bool = True) -> DatasetInfo:
    """Check every split file under ``root`` and their agreement; raise DataError on the first problem."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data.root: folder does not exist")
    found = {split: _inspect_split(layout.split_path(root, split), check_finite) for split in splits}
    first_split = splits[0]
    feature_dim, mapping, _ = found[first_split]
    for _split, (dim, other_mapping, info) in found.items():
        if dim != feature_dim:
            raise DataError(
                f"{info.path}: {layout.FEATURES}: feature dim {dim} disagrees with "
                f"{found[first_split][2].path.name} ({feature_dim})"
            )
        if other_mapping != mapping:
            raise DataError(
                f"{info.path}: attribute {layout.ATTR_MAPPING}: class mapping {other_mapping} "
                f"disagrees with {found[first_split][2].path.name} ({mapping})"
            )
    class_names = tuple(name for name, _ in sorted(mapping.items(), key=lambda kv: kv[1]))
    return DatasetInfo(feature_dim, class_names, {split: info for split, (_, _, info) in found.items()})


def check_before_work(root: Path, generate_demo: bool) -> None:
    """Refuse, in one line, a data folder that every job reading it would fail on, before any is started.

    Labels and lengths are read, the features only for their shape: a login node can afford it.
    A folder with no split files passes when ``generate_demo`` will write demo data into it.
    """
    if generate_demo and not any(layout.split_path(root, s).exists() for s in layout.SPLITS):
        return
    inspect_dataset(root, check_finite=False)


def _inspect_split(path: Path, check_finite: bool) -> tuple[int, dict[str, int], SplitInfo]:
    with open_split_file(path) as f:
        features, labels, num_frames = (
            require_dataset(f, path, key) for key in (layout.FEATURES, layout.LABELS, layout.NUM_FRAMES)
        )
        mapping = read_mapping(f, path)
        n, max_frames, feature_dim = features_shape(path, features)
        if n == 0:
            raise DataError(f"{path}: {layout.FEATURES}: split is empty")
        labels_np = read_per_item(path, layout.LABELS, labels, n)
        frames_np = read_per_item(path, layout.NUM_FRAMES, num_frames, n)
        check_labels(path, labels_np, mapping)
        check_num_frames(path, frames_np, max_frames)
        if check_finite:
            check_finite_features(path, features)
    counts = tuple(int(c) for c in np.bincount(labels_np, minlength=len(mapping)))
    return feature_dim, mapping, SplitInfo(path, n, max_frames, feature_dim, counts)


def features_shape(path: Path, features: h5py.Dataset) -> tuple[int, int, int]:
    """(N, max_frames, D) of a features dataset, which must have those 3 dims."""
    if features.ndim != 3:
        raise DataError(f"{path}: {layout.FEATURES}: expected 3 dims [N, max_frames, D], got shape {features.shape}")
    return features.shape


def read_per_item(path: Path, key: str, dataset: h5py.Dataset, num_items: int) -> np.ndarray:
    """A dataset of one value per item (labels, num_frames), its shape checked against the features', read whole."""
    if dataset.shape != (num_items,):
        raise DataError(f"{path}: {key}: expected shape ({num_items},) like {layout.FEATURES}, got {dataset.shape}")
    with reading(path, key):
        return dataset[()]


def open_split_file(path: Path) -> h5py.File:
    """The split file opened for reading; DataError if it is missing, not HDF5, damaged or unreadable."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with reading(path):
        if not h5py.is_hdf5(path):
            raise DataError(f"{path}: not an HDF5 file")
        return h5py.File(path, "r")


def require_dataset(f: h5py.File, path: Path, key: str) -> h5py.Dataset:
    with reading(path, key):
        if key not in f:
            raise DataError(f"{path}: {key}: missing dataset")
        dataset = f[key]
        if not isinstance(dataset, h5py.Dataset):
            raise DataError(f"{path}: {key}: expected a dataset, found a group")
        kinds, what = _DTYPE_KINDS[key]
        if dataset.dtype.kind not in kinds:
            raise DataError(f"{path}: {key}: expected {what}, got dtype {dataset.dtype}")
    return dataset


def read_mapping(f: h5py.File, path: Path) -> dict[str, int]:
    with reading(path, f"attribute {layout.ATTR_MAPPING}"):
        if layout.ATTR_MAPPING not in f.attrs:
            raise DataError(f"{path}: attribute {layout.ATTR_MAPPING}: missing")
        raw = f.attrs[layout.ATTR_MAPPING]
    try:
        mapping = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: attribute {layout.ATTR_MAPPING}: not valid JSON ({err.msg})") from None
    if not isinstance(mapping, dict) or not mapping:
        raise DataError(f"{path}: attribute {layout.ATTR_MAPPING}: expected a non-empty JSON object name -> index")
    if sorted(mapping.values()) != list(range(len(mapping))):
        raise DataError(
            f"{path}: attribute {layout.ATTR_MAPPING}: indices must be 0..{len(mapping) - 1}, "
            f"got {sorted(mapping.values())}"
        )
    return mapping


def check_labels(path: Path, labels: np.ndarray, mapping: dict[str, int]) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= len(mapping)))
    if bad.size:
        raise DataError(
            f"{path}: {layout.LABELS}: {bad.size} label(s) outside the class mapping 0..{len(mapping) - 1} "
            f"(first at item {bad[0]}: {labels[bad[0]]})"
        )


def check_num_frames(path: Path, num_frames: np.ndarray, max_frames: int) -> None:
    bad = np.flatnonzero((num_frames <= 0) | (num_frames > max_frames))
    if bad.size:
        raise DataError(
            f"{path}: {layout.NUM_FRAMES}: {bad.size} value(s) <= 0 or > max_frames {max_frames} "
            f"(first at item {bad[0]}: {num_frames[bad[0]]})"
        )


def check_finite_file(path: Path) -> None:
    """Raise DataError naming the first item of a split file with NaN or inf."""
    with open_split_file(path) as f:
        check_finite_features(path, require_dataset(f, path, layout.FEATURES))


def check_finite_features(path: Path, features: h5py.Dataset | np.ndarray) -> None:
    """Raise DataError naming the first item with NaN or inf; scans in blocks to bound memory."""
    for start in range(0, features.shape[0], _FINITE_CHECK_ITEMS):
        with reading(path, layout.FEATURES):
            block = features[start : start + _FINITE_CHECK_ITEMS]
        if not np.isfinite(block).all():
            item = start + int(np.flatnonzero(~np.isfinite(block).reshape(len(block), -1).all(axis=1))[0])
            raise DataError(f"{path}: {layout.FEATURES}: non-finite values (NaN or inf) in item {item}")
