"""Atomic, verified checkpoint folders on disk.

A checkpoint is a folder ``step-<N>/`` holding ``model.safetensors``,
``optimizer.safetensors``, ``state.json`` and, written last, ``manifest.json``
(size and sha256 of every file). It is built in a hidden temporary folder,
fsynced, then renamed into place, so a folder with that name is complete unless
the disk lied; the manifest catches the disk lying (truncation, bit flips).
Saves go through a :class:`CommitQueue`, which may write them in a background
thread; everything on disk still changes in the order the saves were made.
A save that fails (disk full, over quota, read-only) removes its temporary
folder, leaves every committed checkpoint as it was, and raises
:class:`~videns.io.WriteFailed`: one line with the free space against the
checkpoint's size.
"""

import hashlib
import json
import logging
import mmap
import os
import re
import shutil
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple, Protocol

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from videns.checkpoint.background import CommitQueue, FileContents
from videns.checkpoint.tensorfile import WrittenFile, tensor_file_size, write_chunks, write_tensor_file
from videns.errors import CheckpointError
from videns.io import fsync_folder, move_into_place, process_alive, writing_into

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
MANIFEST_FILE = "manifest.json"
LATEST_LINK = "latest"
_STEP_DIR = re.compile(r"^step-(\d+)$")
_TMP_PREFIX = ".tmp-"
_MOVED_ASIDE = _TMP_PREFIX + "old-"  # a committed folder, for the moment a re-save of its step takes its place
_HASH_THREADS = 4


class CorruptCheckpoint(CheckpointError):
    """A checkpoint folder failed verification."""


def write_folder_atomically(final: Path, files: Mapping[str, FileContents]) -> Path:
    """Write ``files`` (bytes, or CPU tensors for a safetensors file) plus a manifest into ``final``,
    so readers see all of it or none.

    A failed write leaves nothing behind and changes nothing that was there: it
    raises :class:`~videns.io.WriteFailed` once its temporary folder is gone.
    """
    final = Path(final)
    tmp = final.parent / f"{_TMP_PREFIX}{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with writing_into(final.parent, final.name, planned_size(files), leftover=tmp):
        _write_with_manifest(tmp, files)
        _move_into_place(tmp, final)
    return final


def planned_size(files: Mapping[str, FileContents]) -> int:
    """The bytes ``files`` take once written, manifest included (before the filesystem rounds them up to blocks)."""
    sizes = {name: len(data) if isinstance(data, bytes) else tensor_file_size(data) for name, data in files.items()}
    manifest = _manifest_bytes({name: WrittenFile(size, "0" * 64) for name, size in sizes.items()})
    return sum(sizes.values()) + len(manifest)


def _write_with_manifest(folder: Path, files: Mapping[str, FileContents]) -> None:
    folder.mkdir(parents=True)
    written = {
        name: write_chunks(folder / name, [data]) if isinstance(data, bytes) else write_tensor_file(folder / name, data)
        for name, data in files.items()
    }
    write_chunks(folder / MANIFEST_FILE, [_manifest_bytes(written)])
    fsync_folder(folder)


def _manifest_bytes(written: Mapping[str, WrittenFile]) -> bytes:
    return json.dumps({"files": {name: file.manifest_entry() for name, file in written.items()}}, indent=1).encode()


def _move_into_place(tmp: Path, final: Path) -> None:
    if final.exists():
        # Re-saving the same step: move the old copy aside first, since a
        # directory cannot be replaced by rename in one step.
        trash = final.parent / f"{_MOVED_ASIDE}{final.name}-{uuid.uuid4().hex[:8]}"
        os.replace(final, trash)
        try:
            os.replace(tmp, final)
        except OSError:
            os.replace(trash, final)  # the committed copy goes back: a failed save changes nothing
            raise
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_folder(final.parent)


def read_verified(folder: Path) -> "VerifiedFolder":
    """Check every file of a folder against its manifest; raise CorruptCheckpoint otherwise.

    Files are hashed through a memory map, several at once (sha256 releases the
    GIL), so nothing is copied to verify them.
    """
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_bytes())
        entries = manifest["files"]
        expected = {name: (int(entry["size"]), str(entry["sha256"])) for name, entry in entries.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CorruptCheckpoint(f"{folder}: {MANIFEST_FILE} missing or unreadable ({err})") from None
    with ThreadPoolExecutor(max_workers=max(1, min(_HASH_THREADS, len(expected)))) as pool:
        found = dict(zip(expected, pool.map(lambda name: _fingerprint(folder / name), expected)))
    for name, fingerprint in found.items():
        _check_against_manifest(folder / name, fingerprint.size, fingerprint.sha256, expected[name])
    return VerifiedFolder(folder, expected, {name: fingerprint.identity for name, fingerprint in found.items()})


class CheckpointFiles(Protocol):
    """How a checkpoint's files are read: JSON as bytes, safetensors files as tensors."""

    def read_bytes(self, name: str) -> bytes: ...

    def load_tensors(self, name: str) -> dict[str, torch.Tensor]: ...


class VerifiedFolder:
    """A checkpoint folder whose files matched its manifest when it was read (a :class:`CheckpointFiles`).

    Committed checkpoint files are never changed in place (the store only
    renames and deletes whole folders), so a file that is still the same inode,
    size and modification time is still the one that was verified. Tensors are
    memory-mapped copy-on-write: nothing is read twice, and changing a loaded
    tensor never touches the file.
    """

    def __init__(self, path: Path, expected: dict[str, tuple[int, str]], identities: dict[str, tuple[int, ...]]):
        self.path = Path(path)
        self._expected = expected
        self._identities = identities

    def read_bytes(self, name: str) -> bytes:
        """A (small) file's contents, checked against the manifest again as they are read."""
        path = self._listed(name)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise CorruptCheckpoint(f"{path}: unreadable ({err.strerror})") from None
        _check_against_manifest(path, len(data), hashlib.sha256(data).hexdigest(), self._expected[name])
        return data

    def sha256(self, name: str) -> str:
        """The file's sha256 as the manifest lists it, which its contents matched when read."""
        self._listed(name)
        return self._expected[name][1]

    def load_tensors(self, name: str) -> dict[str, torch.Tensor]:
        """A safetensors file's tensors, from the file that was verified."""
        path = self._listed(name)
        try:
            tensors = load_file(path)
        except (OSError, SafetensorError) as err:
            raise CorruptCheckpoint(f"{path}: unreadable ({err})") from None
        if _identity(path) != self._identities[name]:
            raise CorruptCheckpoint(f"{path}: replaced or changed after it was verified")
        return tensors

    def _listed(self, name: str) -> Path:
        if name not in self._expected:
            raise CorruptCheckpoint(f"{self.path}: {name} is not in {MANIFEST_FILE}")
        return self.path / name


class _Fingerprint(NamedTuple):
    size: int
    sha256: str
    identity: tuple[int, ...]


def _fingerprint(path: Path) -> _Fingerprint:
    try:
        with open(path, "rb") as f:
            stat = os.fstat(f.fileno())
            digest = hashlib.sha256()
            if stat.st_size:  # an empty file cannot be memory-mapped
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
                    digest.update(view)
    except OSError as err:
        raise CorruptCheckpoint(f"{path}: unreadable ({err.strerror})") from None
    return _Fingerprint(stat.st_size, digest.hexdigest(), _identity_of(stat))


def _check_against_manifest(path: Path, size: int, sha256: str, expected: tuple[int, str]) -> None:
    if size != expected[0]:
        raise CorruptCheckpoint(f"{path}: size {size} != {expected[0]} in manifest (truncated?)")
    if sha256 != expected[1]:
        raise CorruptCheckpoint(f"{path}: sha256 does not match the manifest (corrupted)")


def _identity(path: Path) -> tuple[int, ...]:
    try:
        return _identity_of(os.stat(path))
    except OSError:
        return ()


def _identity_of(stat: os.stat_result) -> tuple[int, ...]:
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def point_link(link: Path, target_name: str) -> None:
    """Atomically make ``link`` a relative symlink to ``target_name`` beside it."""
    tmp = link.parent / f"{_TMP_PREFIX}link-{uuid.uuid4().hex[:8]}"
    with writing_into(link.parent, f"the {link.name} link", leftover=tmp):
        os.symlink(target_name, tmp)
        move_into_place(tmp, link)


class CheckpointStore:
    """The ``checkpoints/`` folder of one member: save, find the newest valid, purge.

    With a background :class:`CommitQueue`, :meth:`save` returns once the
    tensors are copied; :meth:`wait` returns once every save so far is on disk.
    """

    def __init__(self, root: Path, keep: int = 2, commits: CommitQueue | None = None):
        self.root = Path(root)
        self.keep = keep
        self.commits = commits if commits is not None else CommitQueue(background=False)

    def save(
        self, step: int, files: Mapping[str, FileContents], after_commit: Callable[[Path], None] | None = None
    ) -> Path:
        """Commit a checkpoint for ``step``, point ``latest`` at it, drop the oldest beyond ``keep``.

        ``after_commit(folder)`` runs once the folder is on disk (in the commit thread).
        """
        folder = self.root / f"step-{step:09d}"
        self.commits.commit("checkpoint", files, lambda snapshot: self._commit(folder, snapshot, after_commit))
        return folder

    def wait(self) -> None:
        """Block until every save so far is committed (raising a failed commit's error)."""
        self.commits.wait()

    def _commit(
        self, folder: Path, files: Mapping[str, FileContents], after_commit: Callable[[Path], None] | None
    ) -> None:
        write_folder_atomically(folder, files)  # creates the root too
        point_link(self.root / LATEST_LINK, folder.name)
        self.purge()
        if after_commit is not None:
            after_commit(folder)

    def step_folders(self) -> list[Path]:
        """Checkpoint folders, newest step first."""
        if not self.root.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
        return [p for _, p in sorted(found, reverse=True)]

    def load_latest(self) -> VerifiedFolder | None:
        """The newest checkpoint that verifies, falling back past broken ones (and saying so)."""
        self.restore_moved_aside()
        for folder in self.step_folders():
            try:
                return read_verified(folder)
            except CorruptCheckpoint as err:
                log.warning("skipping checkpoint %s: %s; falling back to the previous one", folder.name, err)
        return None

    def purge(self) -> None:
        """Delete all but the newest ``keep`` checkpoints, and leftovers of interrupted writes."""
        for folder in self.step_folders()[self.keep :]:
            shutil.rmtree(folder, ignore_errors=True)
        self.restore_moved_aside()
        for leftover in self.root.glob(f"{_TMP_PREFIX}*"):
            if leftover.is_dir() and not _written_by_live_process(leftover.name):
                shutil.rmtree(leftover, ignore_errors=True)

    def restore_moved_aside(self) -> None:
        """Put back a committed folder that a re-save moved aside, when the process died before the new one
        took its name; then it is the only copy of that step. Otherwise it is a leftover like any other."""
        if not self.root.is_dir():
            return
        for moved in self.root.glob(f"{_MOVED_ASIDE}*"):
            final = self.root / moved.name.removeprefix(_MOVED_ASIDE).rsplit("-", 1)[0]
            if moved.is_dir() and _STEP_DIR.match(final.name) and not final.exists():
                log.warning("%s: putting back %s, moved aside by a re-save that did not finish", final, moved.name)
                os.replace(moved, final)
            elif moved.is_dir():
                shutil.rmtree(moved, ignore_errors=True)


def _written_by_live_process(tmp_name: str) -> bool:
    match = re.search(r"-(\d+)-[0-9a-f]{8}$", tmp_name)
    if not match or int(match.group(1)) == os.getpid():
        return False
    return process_alive(match.group(1))
