"""Run the check's parts in turn, each within the time still left, and keep what each found.

A part is a function of the :class:`CheckContext` that returns its figures. It
says it does not apply here by raising :class:`Skip` (one line), and that what it
checked does not hold by raising :class:`PartFailed` (one line, plus the figures
it has). Any other exception is a failure too: the next part still runs, and the
traceback goes to the check's log.
"""

import logging
import subprocess
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videns.folders import GpuCheckFolder

log = logging.getLogger(__name__)

OUTPUT_TAIL_CHARS = 3000


class Skip(Exception):
    """The part needs what this machine lacks; the message says what, in one line."""


class PartFailed(Exception):
    """What the part checks does not hold here."""

    def __init__(self, message: str, figures: dict[str, Any] | None = None):
        super().__init__(message)
        self.figures = figures or {}


@dataclass
class Commands:
    """How the check starts the product's own entry points and tests; given by the entry point that runs it."""

    pytest: list[str]
    train: list[str]
    launch: list[str]
    demo_config: Path
    cwd: Path


@dataclass
class CheckContext:
    folder: GpuCheckFolder
    work: Path
    commands: Commands
    cuda: bool
    deadline: float  # time.monotonic() by which every part must have ended
    shared: dict[str, Any] = field(default_factory=dict)  # what one part makes and a later one reuses

    @property
    def data_root(self) -> Path:
        return self.work / "demo-data"

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, command: list[str], *, limit_s: float, what: str) -> subprocess.CompletedProcess:
        """Run ``command`` within ``limit_s`` and the check's time left; a timeout fails the part."""
        timeout = max(1.0, min(limit_s, self.time_left()))
        log.info("%s: %s", what, " ".join(command))
        try:
            return subprocess.run(command, cwd=self.commands.cwd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as err:
            raise PartFailed(f"{what} did not end within {timeout:.0f} s", {"output_tail": _tail(err.stderr)}) from None

    def expect_success(self, result: subprocess.CompletedProcess, what: str) -> None:
        if result.returncode != 0:
            raise PartFailed(
                f"{what} exited {result.returncode}", {"output_tail": _tail(result.stderr) or _tail(result.stdout)}
            )


Part = Callable[[CheckContext], dict[str, Any]]


def run_parts(parts: list[tuple[str, Part]], ctx: CheckContext) -> dict[str, dict[str, Any]]:
    """Each part's record: ``status`` (passed, failed, skipped, not run), ``seconds``, ``note`` and its figures."""
    results: dict[str, dict[str, Any]] = {}
    for name, part in parts:
        if ctx.time_left() <= 0:
            results[name] = {"status": "not run", "seconds": 0.0, "note": "the check's time budget was spent"}
        else:
            results[name] = _run_part(name, part, ctx)
        record = results[name]
        log.info(
            "%s: %s in %.0f s%s",
            name,
            record["status"],
            record["seconds"],
            f" ({record['note']})" if record.get("note") else "",
        )
    return results


def _run_part(name: str, part: Part, ctx: CheckContext) -> dict[str, Any]:
    started = time.monotonic()
    try:
        figures, status, note = part(ctx), "passed", ""
    except Skip as skip:
        figures, status, note = {}, "skipped", str(skip)
    except PartFailed as failed:
        figures, status, note = failed.figures, "failed", str(failed)
    except Exception as err:  # a bug in the product or in the part: recorded, and the next part runs
        log.error("%s raised:\n%s", name, "".join(traceback.format_exception(err)))
        figures, status, note = {}, "failed", f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
    if status == "failed" and figures.get("output_tail"):
        log.error("%s output (last %d characters):\n%s", name, OUTPUT_TAIL_CHARS, figures["output_tail"])
    return {"status": status, "seconds": round(time.monotonic() - started, 1), "note": note, **figures}


def _tail(text: str | bytes | None) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "")[-OUTPUT_TAIL_CHARS:]
