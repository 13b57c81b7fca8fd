"""Read members' resource logs and sum them into an ensemble cost report.

The logs are the JSON-lines files written by :class:`videns.monitor.ResourceMonitor`.
A member that was requeued has several *runs* in one file: a run begins at a
"start" line and ends at its "stop" line or, if the process was killed, at
its last line. Wall time is summed over runs, so time spent waiting in the
queue between a kill and the requeue is not counted; that time, the cause of
each restart and the steps it replayed come from the member's restart records
(:mod:`videns.member.ledger`). Slice-hours are counted from the allocation each
run's lines record (``gres``), not from the devices the process could see.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from videns.member.ledger import CAUSES, summarize_restarts

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


def summarize_member(lines: Sequence[Mapping], restarts: Sequence[Mapping] | None = None) -> dict:
    """One member's peaks, means, wall time, GPU hours, slice-hours by GRES type and restart costs.

    Peaks are None when no line has the field (a CPU-only member has no GPU
    peaks). ``num_samples`` counts every line, start and stop included.
    """
    runs = split_runs(lines)
    slice_hours: dict[str, float] = {}
    for run in runs:
        for name, count in _run_gres(run).items():
            slice_hours[name] = slice_hours.get(name, 0.0) + count * _run_seconds(run) / 3600.0
    wall_seconds = sum(_run_seconds(run) for run in runs)
    gpu_seconds = sum(_run_seconds(run) for run in runs if _run_had_gpu(run))
    summary: dict = {name: _max_of(_numbers(lines, fields)) for name, fields in _PEAK_FIELDS.items()}
    summary.update(
        mean_cpu_percent=_mean_cpu_percent(lines),
        wall_seconds=wall_seconds,
        gpu_hours=gpu_seconds / 3600.0,
        slice_hours=slice_hours,
        restarts=_restarts(lines, len(runs)),
        num_runs=len(runs),
        hosts=sorted({str(line["host"]) for line in lines if line.get("host") is not None}),
        num_samples=len(lines),
    )
    if restarts is not None:
        costs = summarize_restarts(list(restarts))
        # A relaunch by hand is a new job, which SLURM's restart count does not see; the records do.
        summary.update(
            restarts=max(summary["restarts"], costs["restarts"]),
            restarts_by_cause=costs["restarts_by_cause"],
            replayed_steps=costs["replayed_steps"],
            queued_seconds=costs["queued_seconds"],
        )
    return summary


def merge_resource_logs(logs: Mapping[str, Path], restarts: Mapping[str, Sequence[Mapping]] | None = None) -> dict:
    """Summaries of every member plus ensemble totals.

    Args:
        logs: member label (``seed_42``) -> that member's monitor log.
        restarts: member label -> its restart records, for causes, replayed steps and queue time.

    Returns:
        ``{"members": {label: summary}, "totals": {...}}``; a member whose log
        is missing or unreadable is listed in ``totals["missing_members"]``
        and has no entry in ``members``.
    """
    members: dict[str, dict] = {}
    missing: list[str] = []
    for label, path in logs.items():
        try:
            members[label] = summarize_member(
                read_monitor_log(path), None if restarts is None else restarts.get(label, [])
            )
        except OSError as err:
            logger.warning("no resource log for member %s: %s", label, err)
            missing.append(label)
    return {"members": members, "totals": _totals(members.values(), missing)}


def run_cost(merged: dict) -> dict:
    """What the run cost, per member and in total: the part of resources.json that report.md shows."""
    keys = ("wall_seconds", "slice_hours", "restarts", "restarts_by_cause", "replayed_steps", "queued_seconds")
    return {
        "members": {label: {k: s[k] for k in keys if k in s} for label, s in merged["members"].items()},
        "totals": {k: merged["totals"][k] for k in keys if k in merged["totals"]},
    }


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
    totals["slice_hours"] = {}
    for s in summaries:
        for name, hours in s["slice_hours"].items():
            totals["slice_hours"][name] = totals["slice_hours"].get(name, 0.0) + hours
    if any("restarts_by_cause" in s for s in summaries):
        totals["restarts_by_cause"] = {
            cause: sum(s.get("restarts_by_cause", {}).get(cause, 0) for s in summaries) for cause in CAUSES
        }
        totals["replayed_steps"] = sum(s.get("replayed_steps", 0) for s in summaries)
        totals["queued_seconds"] = sum(s.get("queued_seconds", 0.0) for s in summaries)
    totals["missing_members"] = sorted(missing)
    return totals


def _run_seconds(run: Sequence[Mapping]) -> float:
    times = list(_numbers(run, ("time",)))
    return max(times) - min(times) if times else 0.0


def _run_gres(run: Sequence[Mapping]) -> dict[str, int]:
    """The allocation a run's lines record (every line carries the job context)."""
    for line in run:
        gres = line.get("gres")
        if isinstance(gres, dict):
            return {str(k): int(v) for k, v in gres.items() if _is_number(v)}
    return {}


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
