"""Read a whole gzip-compressed HDF5 dataset with its chunks inflated on several cores.

h5py inflates chunk after chunk in one thread, holding the GIL. Preloading the
seed's training split (about 1 GB of gzip'd float32) is then bound by one core
at member start and at every requeue. Here the main thread reads each chunk's
stored bytes and a pool of threads inflates them (zlib releases the GIL) and
copies them into place. Only the filters the seed's files use are undone here
(deflate, optionally after shuffle); any other layout is read by h5py itself.
"""

import math
import os
import zlib
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Callable, Iterator

import h5py
import numpy as np
from h5py import h5z

from videns.errors import DataError

_MAX_THREADS = 16
_BATCH_BYTES = 1 << 20  # stored bytes handed to a thread at once
_BATCHES_IN_FLIGHT_PER_THREAD = 4  # bounds the compressed bytes read ahead of the inflating threads


def read_all(dataset: h5py.Dataset, threads: int | None = None, min_chunk_bytes: int = 64 << 10) -> np.ndarray:
    """``dataset[()]``, inflating chunks on ``threads`` cores (default: the CPUs this process may use).

    Chunks smaller than ``min_chunk_bytes`` are left to h5py, whose C loop beats
    handing them to threads. Raises DataError naming the file and dataset when a
    chunk cannot be read.
    """
    threads = min(threads or _usable_cpus(), _MAX_THREADS)
    pipeline = _filter_pipeline(dataset)
    try:
        if (threads < 2 or pipeline is None or h5z.FILTER_DEFLATE not in pipeline
                or math.prod(dataset.chunks) * dataset.dtype.itemsize < min_chunk_bytes):
            return dataset[()]
        return _read_chunks_in_parallel(dataset, pipeline, threads)
    except (OSError, zlib.error, ValueError) as err:
        raise DataError(f"{dataset.file.filename}: {dataset.name.lstrip('/')}: unreadable, the file is damaged "
                        f"({err})") from None


def _read_chunks_in_parallel(dataset: h5py.Dataset, pipeline: list[int], threads: int) -> np.ndarray:
    out = np.full(dataset.shape, dataset.fillvalue, dtype=dataset.dtype)  # chunks never written hold the fill value
    dsid = dataset.id
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="videns-inflate") as pool:
        in_flight: set[Future] = set()
        for batch in _stored_chunk_batches(dsid):
            in_flight.add(pool.submit(_place_chunks, out, dataset.chunks, batch, pipeline))
            if len(in_flight) >= threads * _BATCHES_IN_FLIGHT_PER_THREAD:
                done, in_flight = wait(in_flight, return_when="FIRST_COMPLETED")
                _raise_failures(done)
        _raise_failures(wait(in_flight).done)
    return out


def _stored_chunk_batches(dsid: h5py.h5d.DatasetID) -> Iterator[list[tuple[tuple[int, ...], int, bytes]]]:
    """(offset, skipped-filter mask, stored bytes) of every chunk, in batches of about _BATCH_BYTES:
    a task per small chunk would cost more in hand-offs than inflating it."""
    batch, size = [], 0
    for offset in _chunk_offsets(dsid):
        skipped_filters, stored = dsid.read_direct_chunk(offset)
        batch.append((offset, skipped_filters, stored))
        size += len(stored)
        if size >= _BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _place_chunks(out: np.ndarray, chunk_shape: tuple[int, ...], batch: list[tuple[tuple[int, ...], int, bytes]],
                  pipeline: list[int]) -> None:
    for offset, skipped_filters, stored in batch:
        _place_chunk(out, chunk_shape, offset, stored, pipeline, skipped_filters)


def _chunk_offsets(dsid: h5py.h5d.DatasetID) -> list[tuple[int, ...]]:
    """Where each stored chunk starts. One pass with chunk_iter: get_chunk_info(i) walks the index from the
    start on every call (1.3 s for 6,000 chunks, growing with the square)."""
    offsets: list[tuple[int, ...]] = []
    try:
        dsid.chunk_iter(lambda info: offsets.append(info.chunk_offset))
    except (AttributeError, NotImplementedError):  # HDF5 before 1.12.3
        offsets = [dsid.get_chunk_info(i).chunk_offset for i in range(dsid.get_num_chunks())]
    return offsets


def _usable_cpus() -> int:
    """CPUs this process may run on: a SLURM task's cpuset, not the whole node (macOS: all of them)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _filter_pipeline(dataset: h5py.Dataset) -> list[int] | None:
    """The dataset's filter ids in write order, or None when it is not chunked or uses a filter we do not undo."""
    if dataset.chunks is None:
        return None
    plist = dataset.id.get_create_plist()
    pipeline = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    return pipeline if set(pipeline) <= set(_UNDO) else None


def _place_chunk(out: np.ndarray, chunk_shape: tuple[int, ...], offset: tuple[int, ...], stored: bytes,
                 pipeline: list[int], skipped_filters: int) -> None:
    data = stored
    for position in reversed(range(len(pipeline))):  # undo the filters last-applied first
        if not skipped_filters & (1 << position):
            data = _UNDO[pipeline[position]](data, out.dtype)
    chunk = np.frombuffer(data, dtype=out.dtype).reshape(chunk_shape)
    # Edge chunks are stored whole; only the part inside the dataset is kept.
    inside = tuple(slice(start, min(start + size, total)) for start, size, total in zip(offset, chunk_shape, out.shape))
    out[inside] = chunk[tuple(slice(0, s.stop - s.start) for s in inside)]


def _inflate(data: bytes, dtype: np.dtype) -> bytes:
    return zlib.decompress(data)


def _unshuffle(data: bytes, dtype: np.dtype) -> bytes:
    """Undo HDF5's shuffle filter, which stores byte 0 of every element, then byte 1, and so on."""
    size = dtype.itemsize
    count = len(data) // size
    if size == 1 or count == 0:
        return data
    planes = np.frombuffer(data, dtype=np.uint8, count=count * size).reshape(size, count)
    return planes.T.tobytes() + data[count * size:]


def _raise_failures(done: set[Future]) -> None:
    for future in done:
        future.result()


# The filters read_all undoes itself, by HDF5 filter id.
_UNDO: dict[int, Callable[[bytes, np.dtype], bytes]] = {h5z.FILTER_DEFLATE: _inflate, h5z.FILTER_SHUFFLE: _unshuffle}
