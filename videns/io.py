"""Small file and process helpers that every layer shares: atomic writes, tolerant reads, liveness.

Atomic here means a reader sees the old file or the new one, never half of
either: the text goes to a temporary file beside the target, then ``os.replace``
swaps it in (atomic on POSIX file systems, NFS included, within one folder).
"""

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

__all__ = ["write_text_atomically", "write_json_atomically", "read_json", "read_jsonl", "append_jsonl",
           "process_start", "process_alive"]

log = logging.getLogger(__name__)


def temporary_sibling(path: Path) -> Path:
    """A hidden name beside ``path``, unique to this process and call."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}")


def write_text_atomically(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomically(path: Path, data: Any) -> None:
    write_text_atomically(path, json.dumps(data, indent=1))


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
    with Path(path).open("a") as f:
        f.write(json.dumps(record) + "\n")


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the "(comm)" field


def process_alive(pid: Any, start: str | None = None) -> bool:
    """Does process ``pid`` on this host still exist (and, given its recorded ``start``, is it the same one)?

    Decided once for every caller:
    - a process of another user exists, so it counts as alive (``kill`` answers
      PermissionError): callers that would delete or take over what the process
      owns must not do so while it may still be writing;
    - pid reuse is caught only when the caller recorded the start time
      (:func:`process_start`); without it a reused pid reads as alive, the safe side;
    - only this host's processes can be asked; callers check the host first.
    """
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = process_start(pid)
    return start is None or now is None or now == start
