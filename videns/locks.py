"""One writer per folder, enforced by the kernel: ``flock`` on a lock file inside it.

A launcher holds its run folder's lock from its checks to its last write; a
training process holds its member folder's lock for its whole life. The kernel
drops a lock when its holder's process ends, however it ends (SIGKILL, OOM, a
requeue), so nothing is ever left to clean up. The lock file also says who
holds it (host, pid, SLURM job), so that a refused writer can name the holder.

Shared filesystems: Linux turns ``flock`` on NFS into a POSIX lock that the
server arbitrates (NFSv4, or NFSv3 with lockd running), so two nodes exclude
each other. Lustre does so only when mounted with ``-o flock``: with
``-o localflock`` each node sees only its own locks, and with ``-o noflock``
(the default on some sites) the call fails. Where the call fails, we refuse to
start, naming the folder; ``VIDENS_ALLOW_UNLOCKED=1`` turns that into a warning,
for filesystems where the user alone makes sure that one process writes.

Within one process a lock is re-entrant: a launcher that trains members in
process, or a member trained by a process that already holds its folder, takes
it again without refusing itself.

A forked child (a DataLoader worker) would share the lock through its copy of
the descriptor and keep it alive for a few seconds after its parent dies,
long enough to refuse the requeued task that follows; children close their
copies at once, so the lock lives exactly as long as its holder.
"""

import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from videns.errors import LockHeld, StorageError

log = logging.getLogger(__name__)

ALLOW_UNLOCKED_ENV = "VIDENS_ALLOW_UNLOCKED"
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_held: dict[Path, "_Held"] = {}  # this process's locks, by lock file


class _Held:
    def __init__(self, fd: int | None):
        self.fd, self.depth = fd, 1


def _close_inherited_locks() -> None:
    for held in _held.values():
        if held.fd is not None:
            os.close(held.fd)  # the parent's lock stays: it holds its own descriptor
    _held.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


class FolderLock:
    """``with FolderLock(folder.lock, "run folder"):`` — exclusive, non-blocking; refuses in one line."""

    def __init__(self, path: Path, what: str):
        self.path, self.what = Path(path).absolute(), what

    def __enter__(self) -> "FolderLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        held = _held.get(self.path)
        if held is not None:
            held.depth += 1
            return
        fd = _open(self.path, self.what)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise LockHeld(
                    f"{self.path.parent}: {self.what} is in use by {describe_holder(self.path)}; "
                    "wait for it to end, or stop it first"
                ) from None
            if err.errno not in _UNSUPPORTED:
                raise StorageError(f"{self.path}: cannot lock the {self.what}: {os.strerror(err.errno)}") from None
            _unsupported(self.path, self.what, err)
            fd = None
        if fd is not None:
            _record_holder(fd)
        _held[self.path] = _Held(fd)

    def release(self) -> None:
        held = _held.get(self.path)
        if held is None:
            return
        held.depth -= 1
        if held.depth == 0:
            del _held[self.path]
            if held.fd is not None:
                os.close(held.fd)  # closing drops the lock; the file stays, so that no one locks a deleted name


def holder_of(path: Path) -> dict[str, Any] | None:
    """Who holds the lock at ``path`` right now (what the holder recorded), or None when nobody does.

    Takes and drops the lock at once when it is free, so it never blocks a writer for long.
    """
    path = Path(path).absolute()
    if path in _held or not path.exists():
        return None
    try:  # read-write: on NFS an exclusive lock needs a file open for writing
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:  # gone, or not writable: then no one can be writing there either
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return _recorded_holder(path) or {"unknown": True}
        return None
    finally:
        os.close(fd)
    return None


def describe_holder(path: Path) -> str:
    """``pid 123 on node7 (job 456_2) since 2026-12-04T10:00:00`` from what the holder recorded."""
    holder = _recorded_holder(path)
    if not holder:
        return "another process (it has not recorded itself yet)"
    job = f" (job {holder['job_id']})" if holder.get("job_id") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}{job} since {holder.get('since')}"


def this_process() -> dict[str, Any]:
    job = os.environ.get("SLURM_JOB_ID")
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "job_id": job,
        "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _open(path: Path, what: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise StorageError(f"{path.parent}: cannot write the {what}: {os.strerror(err.errno)}") from None


def _record_holder(fd: int) -> None:
    """Who holds it, written into the locked file; best effort, since only a refused writer reads it."""
    try:
        data = json.dumps(this_process()).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    except OSError as err:
        log.debug("could not record the lock's holder: %s", err)


def _recorded_holder(path: Path) -> dict[str, Any] | None:
    try:
        holder = json.loads(Path(path).read_text() or "null")
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _unsupported(path: Path, what: str, err: OSError) -> None:
    message = (
        f"{path.parent}: its filesystem refuses file locks ({os.strerror(err.errno)}), so nothing stops a "
        f"second process from writing the {what} at the same time (on Lustre, mount with -o flock)"
    )
    if os.environ.get(ALLOW_UNLOCKED_ENV) != "1":
        raise StorageError(message + f"; set {ALLOW_UNLOCKED_ENV}=1 to run without the lock")
    log.warning("%s; running without it, as %s=1 asks", message, ALLOW_UNLOCKED_ENV)
