"""Real damaged HDF5 files, made by the tests that need them: each function damages ``path`` in place
and returns the dataset key a reader will trip over ("" when the file itself cannot be opened)."""

from pathlib import Path

import h5py
import numpy as np

from videns.data import layout


def damage_superblock(path: Path) -> str:
    data = bytearray(path.read_bytes())
    assert data[:8] == b"\x89HDF\r\n\x1a\n"
    data[8:24] = b"\xff" * 16  # the signature stays: h5py.is_hdf5 still says yes
    path.write_bytes(bytes(data))
    return ""


def truncate(path: Path) -> str:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return ""


def damage_chunk(path: Path, item: int | None = None) -> str:
    """Flip bytes in the middle of the gzip chunk of one item (by default one in the second half)."""
    with h5py.File(path, "r") as f:
        features = f[layout.FEATURES]
        item = features.shape[0] * 3 // 4 if item is None else item
        info = features.id.get_chunk_info_by_coord((item, 0, 0))
    data = bytearray(path.read_bytes())
    start = info.byte_offset + info.size // 2
    data[start : start + 16] = bytes(b ^ 0xFF for b in data[start : start + 16])
    path.write_bytes(bytes(data))
    return layout.FEATURES


def string_features(path: Path) -> str:
    with h5py.File(path, "a") as f:
        shape = f[layout.FEATURES].shape
        del f[layout.FEATURES]
        f.create_dataset(layout.FEATURES, data=np.full(shape, b"0.5", dtype="S3"))
    return layout.FEATURES


def float_labels(path: Path) -> str:
    with h5py.File(path, "a") as f:
        labels = f[layout.LABELS][()]
        del f[layout.LABELS]
        f.create_dataset(layout.LABELS, data=labels.astype(np.float64))
    return layout.LABELS
