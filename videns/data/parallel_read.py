"""Read a whole gzip-compressed HDF5 dataset with its chunks inflated on several cores.

h5py inflates chunk after chunk in one thread, holding the GIL. Preloading the
reference video features' training split (about 1 GB of gzip'd float32) is then bound by one core
at member start and at every requeue. Here the main thread reads each chunk's
stored bytes and a pool of threads inflates them (zlib releases the GIL) and
copies them into place. Only what the reference feature files use is done here: deflate,
optionally after shuffle, on a type stored as numpy holds it, in chunks of at
least ``min_chunk_bytes``. Anything else is read by h5py itself.
"""

import math
import os
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait

import h5py
import numpy as np
from h5py import h5d, h5t, h5z

from videns.data.reading import reading

_MAX_THREADS = 16
_BATCH_BYTES = 1 << 20  # stored bytes handed to a thread at once
_BATCHES_IN_FLIGHT_PER_THREAD = 4  # bounds the compressed bytes read ahead of the inflating threads
_FILTERS_UNDONE_HERE = {h5z.FILTER_DEFLATE, h5z.FILTER_SHUFFLE}

StoredChunk = tuple[tuple[int, ...], int, bytes]  # (offset, mask of the filters skipped for it, stored bytes)


class _UnreadableChunk(ValueError):
    pass


def read_all(dataset: h5py.Dataset, threads: int | None = None, min_chunk_bytes: int = 64 << 10) -> np.ndarray:
    """``dataset[()]``, with chunks inflated on up to ``threads`` cores (default: the CPUs this process may
    run on, at most 16).

    Raises DataError naming the file and dataset when it cannot be read.
    """
    threads = min(threads or _usable_cpus(), _MAX_THREADS)
    with reading(dataset.file.filename, dataset.name.lstrip("/")):
        pipeline = _filters_undone_here(dataset, min_chunk_bytes) if threads >= 2 else None
        offsets = _chunk_offsets(dataset) if pipeline is not None else None
        if offsets is None:
            return dataset[()]
        return _read_chunks_in_parallel(dataset, pipeline, offsets, threads)


def _filters_undone_here(dataset: h5py.Dataset, min_chunk_bytes: int) -> list[int] | None:
    """The dataset's filter ids in the order they were applied when writing, or None if h5py should read it."""
    if dataset.chunks is None or math.prod(dataset.chunks) * dataset.dtype.itemsize < min_chunk_bytes:
        return None  # h5py's C loop beats handing small chunks to threads
    plist = dataset.id.get_create_plist()
    pipeline = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    inflatable = (
        h5z.FILTER_DEFLATE in pipeline
        and set(pipeline) <= _FILTERS_UNDONE_HERE
        # h5py converts types stored otherwise (variable-length, N-bit, custom floats) as it reads
        and dataset.id.get_type().equal(h5t.py_create(dataset.dtype))
        and plist.get_fill_time() != h5d.FILL_TIME_NEVER
    )
    return pipeline if inflatable else None


def _read_chunks_in_parallel(
    dataset: h5py.Dataset, pipeline: list[int], offsets: list[tuple[int, ...]], threads: int
) -> np.ndarray:
    every_chunk_stored = len(offsets) == math.prod(-(-n // c) for n, c in zip(dataset.shape, dataset.chunks))
    out = (
        np.empty(dataset.shape, dataset.dtype)
        if every_chunk_stored
        else np.full(dataset.shape, dataset.fillvalue, dtype=dataset.dtype)
    )  # unwritten chunks: the fill value
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="videns-inflate") as pool:
        in_flight: set[Future] = set()
        try:
            for batch in _stored_chunk_batches(dataset.id, offsets):
                in_flight.add(pool.submit(_place_chunks, out, dataset.chunks, batch, pipeline))
                if len(in_flight) >= threads * _BATCHES_IN_FLIGHT_PER_THREAD:
                    done, in_flight = wait(in_flight, return_when="FIRST_COMPLETED")
                    _raise_failures(done)
            _raise_failures(wait(in_flight).done)
        except BaseException:
            pool.shutdown(cancel_futures=True)  # do not inflate the rest of a file we cannot use
            raise
    return out


def _chunk_offsets(dataset: h5py.Dataset) -> list[tuple[int, ...]] | None:
    """Where each stored chunk starts, or None where this HDF5 cannot list them.

    One pass with chunk_iter: get_chunk_info(i) walks the index from the start
    on every call (1.3 s for 6,000 chunks, growing with the square).
    """
    dsid, offsets = dataset.id, []
    try:
        dsid.chunk_iter(lambda info: offsets.append(info.chunk_offset))
        return offsets
    except (AttributeError, NotImplementedError):
        pass
    try:
        return [dsid.get_chunk_info(i).chunk_offset for i in range(dsid.get_num_chunks())]
    except (AttributeError, NotImplementedError):
        return None


def _stored_chunk_batches(dsid: h5py.h5d.DatasetID, offsets: list[tuple[int, ...]]) -> Iterator[list[StoredChunk]]:
    """Every chunk as stored, in batches of about _BATCH_BYTES: a task per small chunk would cost more in
    hand-offs than inflating it."""
    batch, size = [], 0
    for offset in offsets:
        skipped_filters, stored = dsid.read_direct_chunk(offset)
        batch.append((offset, skipped_filters, stored))
        size += len(stored)
        if size >= _BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _place_chunks(out: np.ndarray, chunk_shape: tuple[int, ...], batch: list[StoredChunk], pipeline: list[int]) -> None:
    nbytes = math.prod(chunk_shape) * out.dtype.itemsize
    for offset, skipped_filters, stored in batch:
        data = _unfilter(stored, pipeline, skipped_filters, out.dtype.itemsize, nbytes)
        if len(data) != nbytes:
            raise _UnreadableChunk(f"the chunk at {offset} holds {len(data)} bytes, not {nbytes}")
        chunk = np.frombuffer(data, dtype=out.dtype).reshape(chunk_shape)
        # Edge chunks are stored whole; only the part inside the dataset is kept.
        inside = tuple(
            slice(start, min(start + size, total)) for start, size, total in zip(offset, chunk_shape, out.shape)
        )
        out[inside] = chunk[tuple(slice(0, s.stop - s.start) for s in inside)]


def _unfilter(data: bytes, pipeline: list[int], skipped_filters: int, itemsize: int, nbytes: int) -> bytes:
    """Undo the chunk's filters, the last applied first."""
    for position in reversed(range(len(pipeline))):
        if skipped_filters & (1 << position):
            continue
        if pipeline[position] == h5z.FILTER_DEFLATE:
            data = _inflate(data, nbytes)
        else:
            data = _unshuffle(data, itemsize)
    return data


def _inflate(data: bytes, nbytes: int) -> bytes:
    inflater = zlib.decompressobj()
    try:
        # One byte more than a chunk holds is enough to tell a wrong chunk, without inflating all of it.
        return inflater.decompress(data, nbytes + 1)
    except zlib.error as err:
        raise _UnreadableChunk(f"a chunk cannot be inflated: {err}") from None


def _unshuffle(data: bytes, itemsize: int) -> bytes:
    """Undo HDF5's shuffle filter, which stores byte 0 of every element, then byte 1, and so on."""
    count = len(data) // itemsize
    if itemsize == 1 or count == 0:
        return data
    planes = np.frombuffer(data, dtype=np.uint8, count=count * itemsize).reshape(itemsize, count)
    return planes.T.tobytes() + data[count * itemsize :]


def _usable_cpus() -> int:
    """CPUs this process may run on: a SLURM task's cpuset, not the whole node (macOS: all of them).

    A cgroup CPU quota without a cpuset is not seen; threads beyond it only wait.
    """
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _raise_failures(done: set[Future]) -> None:
    for future in done:
        future.result()
