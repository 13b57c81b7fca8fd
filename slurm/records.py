"""What a launch (of a run, a sweep or a bench) records about itself: when, and from which code."""

import subprocess
import time

from slurm.cluster import code_root


def git_revision() -> str:
    """The code's commit, with ``+dirty`` when tracked files differ from it; "unknown" outside git."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=code_root(), capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=code_root(),
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (rev or "unknown") + ("+dirty" if dirty else "")


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
