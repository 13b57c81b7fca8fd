"""Were a library's candidates trained on the same data? The same train, val and test files: size and sha256.

Each candidate's files are the split files under the data.root saved with its
best checkpoint. Two folders with identical files are the same data (a copy
moved elsewhere); the same folder with another train file is not (labels
shuffled, items added). Each distinct file is hashed once, so a pool trained
on one folder costs three hashes, however many candidates it has.
"""

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videns.data import layout
from videns.ensemble.members import Member
from videns.errors import ConfigError, DataError

COMPARED_SPLITS = ("train", "val", "test")
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class SplitFile:
    """One split file as found: its path, and its size and sha256 (None when it is missing)."""

    path: Path
    size: int | None
    sha256: str | None

    @property
    def content(self) -> tuple[int | None, str | None]:
        return self.size, self.sha256

    def describe(self) -> str:
        return "missing" if self.size is None else f"{self.size} bytes, sha256 {self.sha256[:12]}"

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "size": self.size, "sha256": self.sha256}


class FileHasher:
    """Size and sha256 of files, each distinct (resolved) path read once."""

    def __init__(self):
        self._seen: dict[Path, SplitFile] = {}

    def split_files(self, root: Path) -> dict[str, SplitFile]:
        return {split: self.facts(layout.split_path(root, split)) for split in COMPARED_SPLITS}

    def facts(self, path: Path) -> SplitFile:
        key = path.resolve()
        if key not in self._seen:
            self._seen[key] = _read_facts(path)
        return self._seen[key]


def _read_facts(path: Path) -> SplitFile:
    if not path.is_file():
        return SplitFile(path, None, None)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return SplitFile(path, path.stat().st_size, digest.hexdigest())


def check_same_split_files(members: list[Member], hasher: FileHasher | None = None) -> dict[str, SplitFile]:
    """The split files every candidate was trained on; refuse, naming the odd one out, when they differ.

    The reference is what most candidates were trained on (the first candidate's files on a tie).
    """
    hasher = hasher or FileHasher()
    found = {m.name: hasher.split_files(_data_root(m)) for m in members}
    content = {name: tuple(files[s].content for s in COMPARED_SPLITS) for name, files in found.items()}
    counts = Counter(content.values())
    first = members[0].name
    reference = max(counts, key=lambda key: (counts[key], key == content[first]))
    holders = [name for name, key in content.items() if key == reference]
    for member in members:
        if content[member.name] != reference:
            raise DataError(_odd_one_out(member, found[member.name], found[holders[0]], holders, len(members)))
    return found[holders[0]]


def _data_root(member: Member) -> Path:
    if member.data_root is None:
        raise ConfigError(
            f"{member.label}: its best checkpoint records no data.root, so the split files it was "
            f"trained on cannot be checked against the pool's; leave it out of the library"
        )
    return member.data_root


def _odd_one_out(
    member: Member, its: dict[str, SplitFile], usual: dict[str, SplitFile], holders: list[str], num_candidates: int
) -> str:
    split = next(s for s in COMPARED_SPLITS if its[s].content != usual[s].content)
    who = (
        f"the first candidate, {holders[0]}, was"
        if len(holders) * 2 <= num_candidates
        else f"{len(holders)} of the {num_candidates} candidates (e.g. {holders[0]}) were"
    )
    return (
        f"library: {member.label} was trained on other data than the rest of the pool: its {split} file "
        f"{its[split].path} ({its[split].describe()}) differs from {usual[split].path} "
        f"({usual[split].describe()}), which {who} trained on; a library ensemble needs every candidate "
        f"trained on the same train, val and test files"
    )
