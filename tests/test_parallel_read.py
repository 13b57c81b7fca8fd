"""read_all gives exactly what h5py reads, for the layouts it inflates itself and those it leaves to h5py."""

import zlib

import h5py
import numpy as np
import pytest

from videns.data import parallel_read
from videns.data.parallel_read import read_all
from videns.errors import DataError

# layout -> whether read_all inflates it itself (else it leaves the read to h5py)
LAYOUTS = {
    "seed: gzip, a chunk per item": (dict(chunks=(1, 7, 5), compression="gzip", compression_opts=4), True),
    "gzip + shuffle, edge chunks": (dict(chunks=(3, 4, 2), compression="gzip", shuffle=True), True),
    "big-endian, gzip + shuffle": (dict(chunks=(2, 7, 5), compression="gzip", shuffle=True, dtype=">f4"), True),
    "lzf": (dict(chunks=(2, 7, 5), compression="lzf"), False),
    "gzip + fletcher32": (dict(chunks=(2, 7, 5), compression="gzip", fletcher32=True), False),
    "contiguous": (dict(), False),
    "stored as 12-bit ints": (dict(chunks=(2, 7, 5), compression="gzip", dtype="int12"), False),
}


def _int12() -> h5py.Datatype:
    """A 16-bit integer type with 12 bits of precision at offset 4, which h5py converts as it reads."""
    stored = h5py.h5t.STD_I16LE.copy()
    stored.set_precision(12)
    stored.set_offset(4)
    return stored


class _NoWholeRead:
    """The dataset, except that reading it whole through h5py fails the test."""

    def __init__(self, dataset):
        self._dataset = dataset

    def __getattr__(self, name):
        return getattr(self._dataset, name)

    def __getitem__(self, key):
        raise AssertionError("read_all left an inflatable layout to h5py")


@pytest.mark.parametrize("layout, inflated_here", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_equals_h5py(tmp_path, layout, inflated_here):
    values = np.random.default_rng(0).standard_normal((10, 7, 5)).astype(np.float32)
    if layout.get("dtype") == "int12":
        layout, values = {**layout, "dtype": h5py.Datatype(_int12())}, np.arange(350, dtype=np.int16).reshape(10, 7, 5)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("x", data=values, **layout)
    with h5py.File(tmp_path / "x.h5", "r") as f:
        expected = f["x"][()]
        got = read_all(_NoWholeRead(f["x"]) if inflated_here else f["x"], threads=3, min_chunk_bytes=0)
    assert got.dtype == expected.dtype and np.array_equal(got, expected)


def test_small_chunks_are_left_to_h5py(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("x", data=np.ones((50, 8), np.float32), chunks=(1, 8), compression="gzip")
    with h5py.File(tmp_path / "x.h5", "r") as f, pytest.raises(AssertionError, match="left an inflatable layout"):
        read_all(_NoWholeRead(f["x"]), threads=2)


def test_unwritten_chunks_hold_the_fill_value_and_skipped_filters_are_not_undone(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        x = f.create_dataset("x", shape=(6, 4), dtype=np.float32, chunks=(2, 4), compression="gzip", fillvalue=-1.0)
        x[0:2] = 1.0  # chunk 0 deflated; chunk 1 never written
        stored_as_is = np.full((2, 4), 3.0, np.float32).tobytes()
        x.id.write_direct_chunk((4, 0), stored_as_is, filter_mask=1)  # deflate (filter 0) skipped for chunk 2
    with h5py.File(tmp_path / "x.h5", "r") as f:
        expected = f["x"][()]
        got = read_all(_NoWholeRead(f["x"]), threads=2, min_chunk_bytes=0)
    assert np.array_equal(got, expected)
    assert (got[2:4] == -1.0).all() and (got[4:] == 3.0).all()


def test_many_batches_in_flight_give_the_same_array(tmp_path, monkeypatch):
    monkeypatch.setattr(parallel_read, "_BATCH_BYTES", 100)
    monkeypatch.setattr(parallel_read, "_BATCHES_IN_FLIGHT_PER_THREAD", 1)
    values = np.random.default_rng(1).standard_normal((200, 9, 3)).astype(np.float32)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("x", data=values, chunks=(1, 9, 3), compression="gzip", shuffle=True)
    with h5py.File(tmp_path / "x.h5", "r") as f:
        assert np.array_equal(read_all(_NoWholeRead(f["x"]), threads=3, min_chunk_bytes=0), values)


def test_variable_length_strings_are_left_to_h5py(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("x", data=["a", "bb", "ccc"], dtype=h5py.string_dtype(), chunks=(1,), compression="gzip")
    with h5py.File(tmp_path / "x.h5", "r") as f:
        assert read_all(f["x"], threads=2, min_chunk_bytes=0).tolist() == f["x"][()].tolist()


NOT_DEFLATE, SHORT = b"not deflate data", zlib.compress(b"\0" * 8)


# HDF5 itself reads a chunk that inflates to too few bytes without a word, so that case is ours alone.
@pytest.mark.parametrize(
    "threads, stored, why",
    [(1, NOT_DEFLATE, ""), (2, NOT_DEFLATE, "cannot be inflated"), (2, SHORT, "holds 8 bytes, not 32")],
    ids=["h5py, not deflate", "ours, not deflate", "ours, too short"],
)
def test_a_damaged_chunk_is_one_error_naming_file_and_dataset(tmp_path, threads, stored, why):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        x = f.create_dataset("features", shape=(4, 4), dtype=np.float32, chunks=(2, 4), compression="gzip")
        x[()] = 1.0
        x.id.write_direct_chunk((2, 0), stored)
    with h5py.File(tmp_path / "x.h5", "r") as f, pytest.raises(DataError) as caught:
        read_all(f["features"], threads=threads, min_chunk_bytes=0)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'x.h5'}: features: cannot read (") and "\n" not in message
    assert why in message
