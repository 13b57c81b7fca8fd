"""Preemption signals become a flag that the loop checks at step boundaries.

A handler that saved on the spot could run in the middle of an optimizer step
(submitit calls ``checkpoint()`` from inside its USR2 handler), so ours only
records the signal; the loop saves at the next boundary and then stops.
"""

import logging
import signal
from types import FrameType

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


class StopSignals:
    """Context manager: while active, SIGTERM and SIGUSR2 only set ``requested``."""

    def __init__(self, signums: tuple[int, ...] = STOP_SIGNALS):
        self.signums = signums
        self.received: int | None = None
        self.previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    def __enter__(self) -> "StopSignals":
        for signum in self.signums:
            self.previous[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _record(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is None:
            log.warning("received %s: will save at the next step boundary and stop", signal.Signals(signum).name)
        self.received = signum

    def previous_handler(self, signum: int):
        """The handler that was installed before us (e.g. submitit's requeue handler)."""
        return self.previous.get(signum)
