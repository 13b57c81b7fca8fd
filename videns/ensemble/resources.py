"""Read members' resource logs and sum them into an ensemble cost report.

The logs are the JSON-lines files written by :class:`videns.monitor.ResourceMonitor`.
A member that was requeued has several *runs* in one file: a run begins at a
"start" line and ends at its "stop" line or, if the process was killed, at
its last line. Wall time is summed over runs, so time spent waiting in the
queue between a kill and the requeue is not counted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

# The monitor's event names; repeated here so reading a log does not import torch.
_START = "start"
_STOP = "stop"

# Member-summary peaks: summary key -> the line fields it is the maximum of.
# gpu_max_allocated_gb is included because it catches peaks between samples.
_PEAK_FIELDS: dict[str, tuple[str, ...]] = {
    "peak_gpu_allocated_gb": ("gpu_allocated_gb", "gpu_max_allocated_gb"),
    "peak_gpu_reserved_gb": ("gpu_reserved_gb",),
    "peak_device_used_gb": ("device_used_gb",),
    "peak_rss_gb": ("rss_gb",),
}


def read_monitor_log(path: Path) -> list[dict]:
    """Parse a monitor log, skipping a line a kill cut short.

    Raises:
        FileNotFoundError: when the log does not exist.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    records: list[dict] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            # Only the last line can be cut short by a kill; anything else is
            # real damage, so it is louder.
            level = logging.DEBUG if number == len(lines) else logging.WARNING
            logger.log(level, "%s:%d: skipping unparsable line", path, number)
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def split_runs(lines: Sequence[Mapping]) -> list[list[Mapping]]:
    """Group lines into runs; lines before the first "start" form a run of their own."""
    runs: list[list[Mapping]] = []
    current: list[Mapping] = []
    for line in lines:
        if line.get("event") == _START and current:
            runs.append(current)
            current = []
        current.append(line)
        if line.get("event") == _STOP:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def summarize_member(lines: Sequence[Mapping]) -> dict:
    """One member's peaks, means, wall time and GPU hours.

    Peaks are None when no line has the field (a CPU-only member has no GPU
    peaks). ``num_samples`` counts every line, start and stop included.
    """
    runs = split_runs(lines)
    wall_seconds = sum(_run_seconds(run) for run in runs)
    gpu_seconds = sum(_run_seconds(run) for run in runs if _run_had_gpu(run))
    summary: dict = {
        name: _max_of(_numbers(lines, fields)) for name, fields in _PEAK_FIELDS.items()
    }
    summary.update(
        mean_cpu_percent=_mean_cpu_percent(lines),
        wall_seconds=wall_seconds,
        gpu_hours=gpu_seconds / 3600.0,
        restarts=_restarts(lines, len(runs)),
        num_runs=len(runs),
        hosts=sorted({str(line["host"]) for line in lines if line.get("host") is not None}),
        num_samples=len(lines),
    )
    return summary


def merge_resource_logs(logs: Mapping[str, Path]) -> dict:
    """Summaries of every member plus ensemble totals.

    Args:
        logs: member label (``seed_42``) -> that member's monitor log.

    Returns:
        ``{"members": {label: summary}, "totals": {...}}``; a member whose log
        is missing or unreadable is listed in ``totals["missing_members"]``
        and has no entry in ``members``.
    """
    members: dict[str, dict] = {}
    missing: list[str] = []
    for label, path in logs.items():
        try:
            members[label] = summarize_member(read_monitor_log(path))
        except OSError as err:
            logger.warning("no resource log for member %s: %s", label, err)
            missing.append(label)
    return {"members": members, "totals": _totals(members.values(), missing)}


def _totals(summaries: Iterable[dict], missing: list[str]) -> dict:
    summaries = list(summaries)
    totals: dict = {
        "num_members": len(summaries),
        "wall_seconds": sum(s["wall_seconds"] for s in summaries),
        "gpu_hours": sum(s["gpu_hours"] for s in summaries),
        "restarts": sum(s["restarts"] for s in summaries),
    }
    for name in _PEAK_FIELDS:
        totals[name] = _max_of(s[name] for s in summaries if s[name] is not None)
    totals["missing_members"] = sorted(missing)
    return totals


def _run_seconds(run: Sequence[Mapping]) -> float:
    times = list(_numbers(run, ("time",)))
    return max(times) - min(times) if times else 0.0


def _run_had_gpu(run: Sequence[Mapping]) -> bool:
    return any(line.get("gpu_allocated_gb") is not None for line in run)


def _mean_cpu_percent(lines: Sequence[Mapping]) -> float | None:
    # Start lines average over the whole process life before monitoring
    # began, not over a sampling interval, so they would skew the mean.
    values = [
        float(line["cpu_percent"])
        for line in lines
        if line.get("event") != _START and _is_number(line.get("cpu_percent"))
    ]
    return sum(values) / len(values) if values else None


def _restarts(lines: Sequence[Mapping], num_runs: int) -> int:
    # SLURM's restart count survives a lost start line; counting runs does not.
    # It may arrive as a string, straight from SLURM_RESTART_COUNT.
    counts = [
        int(value)
        for value in (line.get("restart_count") for line in lines)
        if _is_number(value) or (isinstance(value, str) and value.strip().isdigit())
    ]
    return max(counts) if counts else max(num_runs - 1, 0)


def _numbers(lines: Iterable[Mapping], fields: Sequence[str]) -> Iterable[float]:
    for line in lines:
        for field in fields:
            value = line.get(field)
            if _is_number(value):
                yield float(value)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _max_of(values: Iterable[float]) -> float | None:
    return max(values, default=None)
