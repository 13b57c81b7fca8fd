"""Small file and process helpers that every layer shares: atomic writes, tolerant reads, liveness.

Atomic here means a reader sees the old file or the new one, never half of
either, also after a crash or a power cut: every write goes to a temporary file
beside the target, which is flushed and fsynced, then ``os.replace`` swaps it in
(atomic on POSIX file systems, NFS included, within one folder) and the folder
is fsynced so that the rename itself is on disk. :func:`replacing` does this for
any writer (h5py, matplotlib, numpy, csv); the ``write_*_atomically`` functions
are it for text, bytes and JSON. The temporary file is created like any other,
under the process's umask (0600 once :func:`videns.folders.use_private_umask` ran).

A write that fails (disk full, over quota, read-only, an I/O error) raises
:class:`WriteFailed`: one line naming the folder, what was written and the
errno's meaning, and for a full disk or quota the free space against the size
needed. It is a :class:`~videns.errors.StorageError`, so entry points print it
as that one line. The failed write's temporary file is gone before the line is
made, so the free space it counts is what the next attempt would have.
"""

import errno
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psutil

from videns.errors import StorageError

__all__ = [
    "replacing",
    "write_bytes_atomically",
    "write_text_atomically",
    "write_text_if_changed",
    "write_json_atomically",
    "write_json_even_when_full",
    "read_json",
    "read_jsonl",
    "append_jsonl",
    "WriteFailed",
    "writing_into",
    "write_failure",
    "free_bytes",
    "format_size",
    "fsync_folder",
    "move_into_place",
    "process_start",
    "process_alive",
]

log = logging.getLogger(__name__)

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class WriteFailed(StorageError):
    """Writing into a folder failed: full, over quota, read-only, an I/O error; ``errno`` says which."""

    def __init__(self, message: str, errno_code: int | None = None):  # a default, so that it unpickles
        super().__init__(message)
        self.errno = errno_code

    @property
    def disk_full(self) -> bool:
        """No space left, on the filesystem or in the quota: freeing space is the fix."""
        return self.errno in DISK_FULL_ERRNOS


def write_failure(err: OSError, folder: Path, what: str, needed: int | None = None) -> WriteFailed:
    """``FOLDER: cannot write WHAT: No space left on device (80.0 kB free, about 155 kB needed)``."""
    meaning = os.strerror(err.errno) if err.errno else str(err)
    message = f"{folder}: cannot write {what}: {meaning}"
    if err.errno in DISK_FULL_ERRNOS:
        message += f" ({_space_against_need(Path(folder), err.errno, needed)})"
    return WriteFailed(message, err.errno)


@contextmanager
def writing_into(folder: Path, what: str, needed: int | None = None, leftover: Path | None = None) -> Iterator[None]:
    """Turn an OSError of the writes inside into one :class:`WriteFailed` line naming ``folder``.

    ``leftover``, the write's temporary file or folder, is removed on any failure,
    before the line counts the free space.
    """
    try:
        yield
    except BaseException as err:
        if leftover is not None:
            _remove_quietly(leftover)
        if isinstance(err, OSError):
            raise write_failure(err, folder, what, needed) from err
        raise


def free_bytes(folder: Path) -> int | None:
    """Bytes an ordinary user may still write on ``folder``'s filesystem (the nearest existing folder's)."""
    for candidate in (Path(folder), *Path(folder).parents):
        try:
            stats = os.statvfs(candidate)
        except OSError:
            continue
        return stats.f_bavail * stats.f_frsize
    return None


def format_size(size: float) -> str:
    """``512 B``, ``80.0 kB``, ``155 kB``, ``12.3 MB``: decimal units, three digits at most."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            break
        size /= 1000
    return f"{size:.0f} {unit}" if unit == "B" or abs(size) >= 100 else f"{size:.1f} {unit}"


def _space_against_need(folder: Path, code: int, needed: int | None) -> str:
    """``80.0 kB free, about 155 kB needed``; over quota, the filesystem's free space is not what ran out."""
    free = free_bytes(folder)
    have = "free space unknown" if free is None else f"{format_size(free)} free"
    need = f"about {format_size(needed)} needed" if needed else ""
    if code == errno.EDQUOT:
        return "; ".join(filter(None, [need, f"{have} on the filesystem, but not within your quota"]))
    return ", ".join(filter(None, [have, need]))


def _remove_quietly(path: Path) -> None:
    """Best effort: on a read-only or failing disk the leftover may have to stay."""
    with suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def temporary_sibling(path: Path) -> Path:
    """A hidden name beside ``path``, unique to this process and call."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}")


@contextmanager
def replacing(path: Path, what: str | None = None, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; once the block ends, that file replaces ``path``.

    The file is fsynced, renamed over ``path``, and the folder fsynced. When the
    block raises, ``path`` is left as it was and the temporary file is removed;
    an OSError becomes one :class:`WriteFailed` line naming ``what`` (default: the
    file's name) and, on a full disk, ``needed`` bytes against the free space.
    The block must have closed the file it wrote.
    """
    path = Path(path)
    tmp = temporary_sibling(path)
    with writing_into(path.parent, what or path.name, needed, leftover=tmp):
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        _fsync_file(tmp)
        move_into_place(tmp, path)


def write_bytes_atomically(path: Path, data: bytes) -> None:
    with replacing(path, needed=len(data)) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text_atomically(path: Path, text: str) -> None:
    write_bytes_atomically(path, text.encode())


def move_into_place(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` over ``path`` (same folder) and make the rename survive a crash."""
    os.replace(tmp, path)
    fsync_folder(Path(path).parent)


def fsync_folder(folder: Path) -> None:
    """Put ``folder``'s entries (new names, renames) on disk.

    A filesystem that cannot sync a folder (EINVAL, ENOTSUP: some FUSE and CIFS
    mounts) gets the renames to disk in its own time; failing every write there
    would gain nothing.
    """
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_if_changed(path: Path, text: str) -> None:
    """:func:`write_text_atomically`, skipped when the file holds ``text`` already.

    A restart rewrites files that have not changed (config, history): skipped, they
    cannot fail on a full disk, and a finished member still reports as finished there.
    """
    try:
        if Path(path).read_text() == text:
            return
    except (OSError, ValueError):
        pass
    write_text_atomically(path, text)


def write_json_atomically(path: Path, data: Any) -> None:
    write_text_atomically(path, json.dumps(data, indent=1))


def write_json_even_when_full(path: Path, data: Any) -> bool:
    """Rewrite a small JSON file on a disk that may be full: atomically when it can, else in place.

    In place needs no new block while the text fits in the blocks the file has,
    so it works where a new file cannot be written. A reader may then catch it
    half-written for a moment (:func:`read_json` gives None), which is still better
    than leaving it saying what is no longer true. False when neither worked.
    """
    text = json.dumps(data, indent=1)
    try:
        write_text_atomically(path, text)
        return True
    except WriteFailed as err:
        log.debug("%s; rewriting it in place", err)
    try:
        with open(path, "r+") as f:
            f.write(text)
            f.truncate()
        return True
    except OSError:
        return False


def read_json(path: Path) -> Any:
    """The file's JSON, or None when it is missing, unreadable or not JSON (e.g. cut by a kill)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_jsonl(path: Path) -> list[Any]:
    """One JSON value per line; a missing file is empty, and an unreadable line ends the list (a kill can cut
    the last line of a file appended to, or rewritten in place)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            if number < len(lines):
                log.warning("%s:%d: stopping at an unreadable line", path, number)
            break
    return records


def append_jsonl(path: Path, record: Any) -> None:
    """One JSON line added at the end; a kill can cut only this line, which :func:`read_jsonl` then drops."""
    line = json.dumps(record) + "\n"
    path = Path(path)
    with writing_into(path.parent, path.name, len(line.encode())), path.open("a") as f:
        f.write(line)


# Two reads of one process's start time can differ by a second: psutil adds the boot time, which the kernel
# reports in whole seconds and recomputes from the clock. A different process on the same pid started later.
SAME_START_TOLERANCE_S = 2.0


def process_start(pid: int) -> float | None:
    """When the process started (seconds since the epoch), to tell a reused pid apart; None when it cannot be read."""
    try:
        return psutil.Process(int(pid)).create_time()
    except (psutil.Error, ValueError, TypeError):
        return None


def process_alive(pid: Any, start: Any = None) -> bool:
    """Does process ``pid`` on this host still exist (and, given its recorded ``start``, is it the same one)?

    Decided once for every caller:
    - a process of another user exists, so it counts as alive: callers that
      would delete or take over what the process owns must not do so while it
      may still be writing;
    - pid reuse is caught only when the caller recorded the start time
      (:func:`process_start`); without it, or with one in another format (the
      clock ticks of earlier records), a reused pid reads as alive, the safe side;
    - only this host's processes can be asked; callers check the host first.
    """
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0 or not psutil.pid_exists(pid):
        return False
    now = process_start(pid)
    if not isinstance(start, (int, float)) or isinstance(start, bool) or now is None:
        return True
    return abs(now - start) <= SAME_START_TOLERANCE_S
