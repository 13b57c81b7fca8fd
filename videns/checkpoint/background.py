"""Commit checkpoint files in a background thread, so training waits only for a memory copy.

A commit first copies every tensor it will write into host buffers owned by
this object (the live weights and optimizer moments keep changing as soon as
training goes on), then writes, hashes, fsyncs and renames in one background
thread. Commits run one at a time, in the order given, so the folders and links
on disk change in the same order as with synchronous writes. A crash while a
commit is in flight leaves only a hidden temporary folder: the previous
checkpoint stays the newest valid one, and resuming from it replays the lost
steps bit-identically.

Buffers are kept per (kind, file, tensor) and reused, so after the first save a
snapshot is a plain memory copy with no page faults. A buffer is reused only
after the commit that last read it has finished. Host memory cost: one extra
copy of each distinct state written (for a checkpoint, model plus optimizer).

An error in a background commit (disk full, permissions) is raised by the next
call to :meth:`commit` or :meth:`wait`, in the training thread.
"""

from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

TensorDict = Mapping[str, torch.Tensor]
FileContents = bytes | TensorDict


class CommitQueue:
    """At most one background thread writing checkpoint files; inline when ``background`` is False."""

    def __init__(self, background: bool = True):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="videns-commit") if background else None
        self._pending: list[Future] = []
        self._buffers: dict[tuple[str, str, str], torch.Tensor] = {}
        self._buffer_users: dict[tuple[str, str], Future] = {}

    def commit(
        self, kind: str, files: Mapping[str, FileContents], write: Callable[[dict[str, FileContents]], Any]
    ) -> None:
        """Snapshot ``files`` now and run ``write(snapshot)`` after every earlier commit.

        ``kind`` names the buffers this commit reuses ("checkpoint", "best", ...).
        """
        self._raise_failures()
        if self._pool is None:
            # Written before returning: nothing changes the tensors meanwhile, so no copy is needed.
            write(
                {
                    name: data
                    if isinstance(data, bytes)
                    else {k: t.detach().cpu().contiguous() for k, t in data.items()}
                    for name, data in files.items()
                }
            )
            return
        snapshot = {
            name: data if isinstance(data, bytes) else self._copy(kind, name, data) for name, data in files.items()
        }
        future = self._pool.submit(write, snapshot)
        self._pending.append(future)
        for name, data in files.items():
            if not isinstance(data, bytes):
                self._buffer_users[(kind, name)] = future

    @property
    def busy(self) -> bool:
        """Whether a commit is still being written."""
        return any(not f.done() for f in self._pending)

    def wait(self) -> None:
        """Block until every commit so far is on disk; raise the first one's error, if any."""
        for future in self._pending:
            future.exception()
        self._raise_failures()

    def close(self) -> None:
        """Finish pending commits (raising their error) and stop the thread."""
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            self._buffers.clear()

    def _copy(self, kind: str, file_name: str, tensors: TensorDict) -> dict[str, torch.Tensor]:
        user = self._buffer_users.pop((kind, file_name), None)
        if user is not None:
            user.exception()  # the commit still reading these buffers must finish first
        copies = {
            name: self._buffer(kind, file_name, name, t).copy_(t.detach(), non_blocking=True)
            for name, t in tensors.items()
        }
        for device in {t.device for t in tensors.values() if t.device.type == "cuda"}:
            torch.cuda.synchronize(
                device
            )  # non-blocking copies into pinned memory must land before the writer reads them
        return copies

    def _buffer(self, kind: str, file_name: str, name: str, like: torch.Tensor) -> torch.Tensor:
        key = (kind, file_name, name)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.shape != like.shape or buffer.dtype != like.dtype:
            pin = like.device.type == "cuda"
            buffer = torch.empty(like.shape, dtype=like.dtype, device="cpu", pin_memory=pin)
            self._buffers[key] = buffer
        return buffer

    def _raise_failures(self) -> None:
        done = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        for future in done:
            if future.exception() is not None:
                for later in self._pending:
                    later.exception()  # leave no commit running behind the error
                self._pending = []
                raise future.exception()
