"""Merging members' monitor logs into an ensemble resource report."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from videns.ensemble.resources import merge_resource_logs, read_monitor_log, summarize_member


def line(event: str, time: float, **fields: object) -> str:
    return json.dumps({"event": event, "time": time, **fields})


def gpu(allocated: float, reserved: float, max_allocated: float, **fields: object) -> dict:
    return {
        "gpu_allocated_gb": allocated, "gpu_reserved_gb": reserved,
        "gpu_max_allocated_gb": max_allocated, **fields,
    }  # fmt: skip


@pytest.fixture
def member_logs(tmp_path: Path) -> dict[str, Path]:
    # seed_1: a run killed after 100 s (no stop line, a half-written last
    # line), then a requeued run of 50 s on another host that stops cleanly.
    killed_then_requeued = [
        line("start", 1000.0, host="n2", cpu_percent=999.0, rss_gb=1.0, restart_count=0, **gpu(0.0, 0.0, 0.0)),
        line("sample", 1060.0, host="n2", cpu_percent=100.0, rss_gb=2.0, restart_count=0, **gpu(3.0, 6.0, 4.0)),
        line(
            "sample",
            1100.0,
            host="n2",
            cpu_percent=200.0,
            rss_gb=2.5,
            restart_count=0,
            **gpu(3.5, 7.0, 5.0, device_used_gb=7.6),
        ),
        '{"event": "sample", "time": 11',
        line("start", 5000.0, host="n1", cpu_percent=999.0, rss_gb=1.0, restart_count=1, **gpu(0.0, 0.0, 0.0)),
        line("sample", 5030.0, host="n1", cpu_percent=300.0, rss_gb=1.5, restart_count=1, **gpu(2.0, 8.0, 4.5)),
        line("stop", 5050.0, host="n1", cpu_percent=100.0, rss_gb=1.5, restart_count=1, **gpu(1.0, 8.0, 4.5)),
    ]
    # seed_2: one clean CPU-only run of 200 s, ending in a truncated line.
    cpu_only = [
        line("start", 2000.0, host="n3", cpu_percent=50.0, rss_gb=0.5),
        line("sample", 2100.0, host="n3", cpu_percent=80.0, rss_gb=3.0),
        line("stop", 2200.0, host="n3", cpu_percent=40.0, rss_gb=0.7),
        '{"event": "sam',
    ]
    paths = {"seed_1": tmp_path / "seed_1.jsonl", "seed_2": tmp_path / "seed_2.jsonl"}
    paths["seed_1"].write_text("\n".join(killed_then_requeued) + "\n")
    paths["seed_2"].write_text("\n".join(cpu_only))  # no final newline: cut mid-line
    return paths


def test_truncated_last_line_is_skipped_quietly(member_logs: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="videns.ensemble.resources"):
        lines = read_monitor_log(member_logs["seed_2"])
    assert [entry["event"] for entry in lines] == ["start", "sample", "stop"]
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]


def test_killed_run_ends_at_its_last_line_and_wall_time_sums_runs(member_logs: dict[str, Path]) -> None:
    summary = summarize_member(read_monitor_log(member_logs["seed_1"]))
    assert summary["num_runs"] == 2
    assert summary["wall_seconds"] == pytest.approx(100.0 + 50.0)  # queue gap not counted
    assert summary["gpu_hours"] == pytest.approx(150.0 / 3600.0)
    assert summary["restarts"] == 1
    assert summary["hosts"] == ["n1", "n2"]
    assert summary["num_samples"] == 6


def test_peaks_include_max_allocated_between_samples(member_logs: dict[str, Path]) -> None:
    summary = summarize_member(read_monitor_log(member_logs["seed_1"]))
    assert summary["peak_gpu_allocated_gb"] == 5.0  # from gpu_max_allocated_gb
    assert summary["peak_gpu_reserved_gb"] == 8.0
    assert summary["peak_device_used_gb"] == 7.6  # the slice's own count, CUDA context included
    assert summary["peak_rss_gb"] == 2.5
    # Start lines average over the process's life before monitoring; left out.
    assert summary["mean_cpu_percent"] == pytest.approx((100 + 200 + 300 + 100) / 4)


def test_restarts_fall_back_to_run_count_without_restart_count() -> None:
    lines = [
        {"event": "start", "time": 0.0},
        {"event": "sample", "time": 5.0},
        {"event": "start", "time": 9.0},
    ]
    assert summarize_member(lines)["restarts"] == 1


def test_merge_totals_and_missing_member_is_listed_not_fatal(member_logs: dict[str, Path], tmp_path: Path) -> None:
    report = merge_resource_logs({**member_logs, "seed_3": tmp_path / "never_written.jsonl"})

    assert set(report["members"]) == {"seed_1", "seed_2"}
    cpu_member = report["members"]["seed_2"]
    assert cpu_member["gpu_hours"] == 0.0 and cpu_member["peak_gpu_allocated_gb"] is None
    totals = report["totals"]
    assert totals["missing_members"] == ["seed_3"]
    assert totals["num_members"] == 2
    assert totals["wall_seconds"] == pytest.approx(150.0 + 200.0)
    assert totals["gpu_hours"] == pytest.approx(150.0 / 3600.0)
    assert totals["restarts"] == 1
    assert totals["peak_gpu_allocated_gb"] == 5.0
    assert totals["peak_gpu_reserved_gb"] == 8.0
    assert totals["peak_rss_gb"] == 3.0
    json.dumps(report)  # the report is written next to the ensemble metrics as JSON


def test_merge_of_only_missing_logs_gives_empty_totals(tmp_path: Path) -> None:
    totals = merge_resource_logs({"seed_9": tmp_path / "absent.jsonl"})["totals"]
    assert totals["missing_members"] == ["seed_9"]
    assert totals["wall_seconds"] == 0 and totals["peak_rss_gb"] is None
