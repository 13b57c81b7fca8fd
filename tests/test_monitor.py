"""ResourceMonitor: what it writes, when, and that a kill loses nothing."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import torch

from videns.monitor import ResourceMonitor, mig_instance_from_env, release_cached_gpu_memory

REPO_ROOT = Path(__file__).resolve().parents[1]
BASE_KEYS = {
    "event", "time", "iso_time", "pid", "host", "device",
    "cpu_percent", "system_cpu_percent", "ram_used_gb", "ram_percent", "rss_gb",
}  # fmt: skip
GPU_KEYS = {"gpu_allocated_gb", "gpu_reserved_gb", "gpu_max_allocated_gb", "gpu_name", "mig_instance"}
CONTEXT = {"job_id": "4242", "array_task_id": 3, "restart_count": 1, "seed": 42}


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_for_lines(path: Path, count: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} did not reach {count} lines in {timeout_s} s")


def test_start_and_stop_write_lines_with_required_and_context_keys(tmp_path: Path) -> None:
    log = tmp_path / "member" / "resources.jsonl"  # parent does not exist yet
    with ResourceMonitor(log, interval_s=3600.0, context=CONTEXT, device="cpu"):
        pass

    lines = read_lines(log)
    assert len(lines) >= 2
    assert [lines[0]["event"], lines[-1]["event"]] == ["start", "stop"]
    for line in lines:
        assert BASE_KEYS | CONTEXT.keys() <= line.keys()
        assert {key: line[key] for key in CONTEXT} == CONTEXT
        assert line["pid"] == os.getpid()
        assert not GPU_KEYS & line.keys()  # CPU device: no GPU fields


def test_short_interval_writes_periodic_samples(tmp_path: Path) -> None:
    log = tmp_path / "resources.jsonl"
    with ResourceMonitor(log, interval_s=0.05):
        time.sleep(0.5)

    events = [line["event"] for line in read_lines(log)]
    assert events[0] == "start" and events[-1] == "stop"
    assert events.count("sample") >= 4
    times = [line["time"] for line in read_lines(log)]
    assert times == sorted(times)


_KILLED_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from videns.monitor import ResourceMonitor
    ResourceMonitor(Path(sys.argv[1]), interval_s=0.01, context={"seed": 7}).start()
    time.sleep(600)  # the parent kills us long before this ends
    """
)


def test_sigkilled_subprocess_leaves_parseable_log_and_rerun_appends(tmp_path: Path) -> None:
    log = tmp_path / "resources.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.Popen([sys.executable, "-c", _KILLED_CHILD, str(log)], env=env)
    try:
        wait_for_lines(log, 5)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL

    killed_text = log.read_text()
    killed = read_lines(log)  # raises if any line is cut short
    assert killed[0]["event"] == "start" and "stop" not in {line["event"] for line in killed}
    assert killed_text.endswith("\n")

    with ResourceMonitor(log, interval_s=3600.0, context={"seed": 7}):
        pass
    assert log.read_text().startswith(killed_text)  # appended, not truncated
    events = [line["event"] for line in read_lines(log)]
    assert events[len(killed) :] == ["start", "stop"]


def test_partial_last_line_does_not_swallow_the_next_start_line(tmp_path: Path) -> None:
    log = tmp_path / "resources.jsonl"
    log.write_text('{"event": "sample", "time": 1.0}\n{"event": "sam')  # a kill mid-write

    with ResourceMonitor(log, interval_s=3600.0):
        pass

    lines = log.read_text().splitlines()
    assert lines[1] == '{"event": "sam'
    assert [json.loads(line)["event"] for line in lines[2:]] == ["start", "stop"]


def test_stop_returns_promptly_with_a_long_interval(tmp_path: Path) -> None:
    monitor = ResourceMonitor(tmp_path / "resources.jsonl", interval_s=1800.0).start()
    time.sleep(0.05)  # let the thread enter its wait
    began = time.perf_counter()
    monitor.stop()
    assert time.perf_counter() - began < 1.0


def test_sampling_failure_warns_once_and_never_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise OSError("no /proc here")

    monkeypatch.setattr(psutil, "virtual_memory", broken)
    with caplog.at_level(logging.WARNING, logger="videns.monitor"):
        with ResourceMonitor(tmp_path / "resources.jsonl", interval_s=0.02):
            time.sleep(0.2)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_context_that_shadows_a_measured_key_is_rejected_at_build(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rss_gb"):
        ResourceMonitor(tmp_path / "resources.jsonl", context={"rss_gb": 1.0})


def test_cuda_device_adds_gpu_fields_and_mig_uuid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No GPU on the test machine: stand in torch.cuda's answers for device 0.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-4f1c-slice")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100 MIG 1g.10gb")
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 3 * 2**30)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 4 * 2**30)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 5 * 2**30)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (6 * 2**30, 10 * 2**30))

    with ResourceMonitor(tmp_path / "resources.jsonl", device="cuda:0"):
        pass

    for line in read_lines(tmp_path / "resources.jsonl"):
        assert GPU_KEYS <= line.keys()
        assert line["gpu_allocated_gb"] == 3.0
        assert line["gpu_reserved_gb"] == 4.0
        assert line["gpu_max_allocated_gb"] == 5.0
        assert line["device_used_gb"] == 4.0 and line["device_total_gb"] == 10.0
        assert line["mig_instance"] == "MIG-4f1c-slice"
        assert line["device"] == "cuda:0"


def test_mig_instance_is_read_only_from_mig_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-aaaa,MIG-bbbb")
    assert mig_instance_from_env(1) == "MIG-bbbb"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert mig_instance_from_env(0) is None
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert mig_instance_from_env(0) is None


def test_one_sample_costs_well_under_one_percent_of_a_short_interval(tmp_path: Path) -> None:
    monitor = ResourceMonitor(tmp_path / "resources.jsonl", interval_s=3600.0).start()
    rounds = 50
    began = time.perf_counter()
    for _ in range(rounds):
        monitor._write("sample")  # measure + json + write + fsync, as the thread does
    per_sample_s = (time.perf_counter() - began) / rounds
    monitor.stop()
    assert per_sample_s < 0.01  # < 1% even of a 1 s interval; the default is 1800 s


def test_release_cached_gpu_memory_is_safe_without_cuda() -> None:
    release_cached_gpu_memory()  # must not raise on a CPU-only machine
