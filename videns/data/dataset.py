"""Per-item access to one split file, safe under forked DataLoader workers."""

import logging
import os
from pathlib import Path

import h5py
import numpy as np

from videns.data import layout
from videns.data.parallel_read import read_all
from videns.data.reading import reading

log = logging.getLogger(__name__)

UNKNOWN_LABEL = -1  # the label of every item of a file without labels


class FeatureSplit:
    """The items of one split: ``split[i] -> (features [T_i, D] float32, label)``.

    The h5py handle is opened lazily and re-opened in every new process, because
    a handle inherited through ``fork`` is not safe to use (h5py does not
    support one handle shared by forked workers). A split whose padded array
    fits ``preload_bytes`` is read into RAM once (:func:`read_all`).
    """

    def __init__(self, path: Path, preload_bytes: int = 0):
        self.path = Path(path)
        with reading(self.path):
            f = h5py.File(self.path, "r")
        with f:
            # A file to predict on may carry no labels; training and evaluation require them (inspect.py).
            self.has_labels = layout.LABELS in f
            self.lengths = self._read(f, layout.NUM_FRAMES).astype(np.int64)
            self.labels = (
                self._read(f, layout.LABELS).astype(np.int64)
                if self.has_labels
                else np.full(self.lengths.shape[0], UNKNOWN_LABEL, dtype=np.int64)
            )
            with reading(self.path, layout.FEATURES):
                self.shape = f[layout.FEATURES].shape  # (N, max_frames, D)
            self.preloaded = self.nbytes() <= preload_bytes
            self._features = read_all(f[layout.FEATURES]) if self.preloaded else None
        self.feature_dim = int(self.shape[2])
        self._file: h5py.File | None = None
        self._file_pid: int | None = None
        log.debug("%s: %d items, preloaded=%s", self.path.name, len(self), self.preloaded)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        length = int(self.lengths[index])
        if self._features is not None:
            features = self._features[index, :length]
        else:
            # A damaged chunk deep in the file surfaces here, maybe in a DataLoader worker.
            with reading(self.path, layout.FEATURES):
                features = self._handle()[layout.FEATURES][index, :length]
        return features, int(self.labels[index])

    @property
    def preloaded_features(self) -> np.ndarray | None:
        """The padded (N, max_frames, D) array when preloaded, else None."""
        return self._features

    def nbytes(self) -> int:
        """Bytes the padded features take in RAM."""
        return self.shape[0] * self.shape[1] * self.shape[2] * 4

    def _read(self, f: h5py.File, key: str) -> np.ndarray:
        with reading(self.path, key):
            return f[key][()]

    def _handle(self) -> h5py.File:
        if self._file is None or self._file_pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._file_pid = os.getpid()
        return self._file

    def __getstate__(self):
        # Spawned workers get a copy without the open handle; they reopen lazily.
        state = self.__dict__.copy()
        state["_file"] = None
        state["_file_pid"] = None
        return state


class ArraySplit(FeatureSplit):
    """A split that lives only in memory, e.g. the output of SMOTE."""

    def __init__(self, features: np.ndarray, lengths: np.ndarray, labels: np.ndarray, name: str = "in-memory"):
        self.path = Path(name)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self._features = np.ascontiguousarray(features, dtype=np.float32)
        self.shape = self._features.shape
        self.preloaded = True
        self.has_labels = True
        self.feature_dim = int(features.shape[2])
        self._file = None
        self._file_pid = None
