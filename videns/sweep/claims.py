"""Who trains which trial, so a dead worker's RUNNING trial is resumed, never left RUNNING.

Optuna's own remedy (heartbeats + ``fail_stale_trials`` + ``RetryFailedTrialCallback``)
only runs inside ``Study.optimize``, marks the trial FAIL and retries it as a *new*
trial number; here a trial is a member folder with checkpoints, so it must be
continued under its own number and params. Hence a claim file per trial:

- ``trials/trial_<n>/claim.json`` names the worker (id, host, pid and the pid's start
  time, job id). The owner touches it every ``heartbeat_s`` while training and removes
  it (releases) when it stops on a signal, so a requeued task may take it at once.
- A claim is *dead* when it is absent or released, when its host is this host and its
  process is gone (or the pid now belongs to another process), or when it was not
  touched for ``stale_after_s`` (another host; e.g. a node that died).
- Taking a trial (a new one via ``study.ask`` or a dead one) happens under one
  sweep-wide lock file, so two workers never both take the same trial and never
  start more than N trials. The lock is optuna's ``JournalFileOpenLock`` (O_EXCL
  create, broken after a grace period if its holder died while holding it).
- An owner that finds its claim taken over (it was stopped, e.g. suspended, for
  longer than ``stale_after_s``) stops training that trial at its next step.
"""

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from optuna.storages.journal import JournalFileOpenLock

from videns.folders import SweepFolder, make_private
from videns.io import process_alive, process_start, write_text_atomically

log = logging.getLogger(__name__)
LOCK_GRACE_S = 30  # scheduling holds the lock for well under a second


@dataclass
class WorkerIdentity:
    """One worker process; written into the claims it holds."""

    worker_id: str
    host: str
    pid: int
    pid_start: float | None
    job_id: str | None = None
    task_index: int | None = None
    started: float = field(default_factory=time.time)

    @classmethod
    def current(cls, job_id: str | None = None, task_index: int | None = None) -> "WorkerIdentity":
        pid = os.getpid()
        return cls(uuid.uuid4().hex[:12], socket.gethostname(), pid, process_start(pid), job_id, task_index)


class TrialClaims:
    """Claim files of the trials in one sweep folder."""

    def __init__(self, folder: SweepFolder, stale_after_s: float):
        self.folder = folder
        self.stale_after_s = stale_after_s

    def path(self, number: int) -> Path:
        return self.folder.trial(number).claim

    def read(self, number: int) -> dict[str, Any] | None:
        try:
            return json.loads(self.path(number).read_text())
        except (OSError, ValueError):
            return None

    def age_s(self, number: int) -> float | None:
        try:
            return time.time() - self.path(number).stat().st_mtime
        except OSError:
            return None

    def heartbeat_mtime(self, number: int) -> float | None:
        try:
            return self.path(number).stat().st_mtime
        except OSError:
            return None

    def owner_state(self, number: int, me: WorkerIdentity) -> str:
        """``mine``, ``dead``, ``alive`` (proven: same host and its process runs) or ``remote`` (unknown yet)."""
        claim = self.read(number)
        if claim is None:
            return "dead"
        if claim.get("worker_id") == me.worker_id:
            return "mine"
        age = self.age_s(number)
        if age is None or age > self.stale_after_s:
            return "dead"
        if claim.get("host") == me.host:
            return "alive" if process_alive(claim.get("pid"), claim.get("pid_start")) else "dead"
        return "remote"

    def take(self, number: int, me: WorkerIdentity, resumed: bool) -> None:
        """Write our claim (call under the schedule lock)."""
        previous = self.read(number)
        record = {
            **asdict(me),
            "claimed": time.time(),
            "resumed": resumed,
            "previous_worker": (previous or {}).get("worker_id"),
        }
        write_text_atomically(self.path(number), json.dumps(record, indent=1))

    def holds(self, number: int, me: WorkerIdentity) -> bool:
        return (self.read(number) or {}).get("worker_id") == me.worker_id

    def release(self, number: int, me: WorkerIdentity) -> None:
        """Give the trial back (we stopped on a signal): any worker may resume it at once."""
        if self.holds(number, me):
            try:
                self.path(number).unlink()
            except FileNotFoundError:
                pass

    def touch(self, number: int) -> None:
        try:
            os.utime(self.path(number))
        except OSError:
            pass


class ClaimHeartbeat:
    """While active, touches our claim every ``interval_s`` and notices when it was taken over."""

    def __init__(self, claims: TrialClaims, number: int, me: WorkerIdentity, interval_s: float):
        self.claims, self.number, self.me, self.interval_s = claims, number, me, interval_s
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"claim-heartbeat-{number}", daemon=True)

    def __enter__(self) -> "ClaimHeartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if not self.claims.holds(self.number, self.me):
                log.error(
                    "trial %d was taken over by another worker (our heartbeat went stale); stopping it here",
                    self.number,
                )
                self.lost = True
                return
            self.claims.touch(self.number)


@contextmanager
def schedule_lock(folder: SweepFolder) -> Iterator[None]:
    """The sweep-wide lock around taking a trial."""
    make_private(folder.trials_dir)
    lock = JournalFileOpenLock(str(folder.schedule_lock), grace_period=LOCK_GRACE_S)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()
