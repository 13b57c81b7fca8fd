"""ResourceMonitor: what it writes, when, and that a kill loses nothing."""

from __future__ import annotations

import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import threading
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


def wait_until(condition, what: str, timeout_s: float = 120.0) -> None:
    """Poll until ``condition()``; the deadline only bounds a hang, it is no assertion about speed."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(0.005)


def line_count(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def blocked_in_wait(thread: threading.Thread) -> bool:
    """Whether ``thread`` is inside threading's ``wait`` (the monitor's Event.wait)."""
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code.co_name == "wait" and frame.f_code.co_filename == threading.__file__:
            return True
        frame = frame.f_back
    return False


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
    interval_s = 0.05
    with ResourceMonitor(log, interval_s=interval_s):
        wait_until(lambda: line_count(log) >= 1 + 4, "a start line and 4 samples")

    lines = read_lines(log)
    events = [line["event"] for line in lines]
    assert events[0] == "start" and events[-1] == "stop"
    assert events.count("sample") >= 4
    times = [line["time"] for line in lines]
    assert times == sorted(times)
    samples = [line["time"] for line in lines if line["event"] == "sample"]
    # One sample per interval, not back to back: a gap is at least the interval however fast the machine
    # (0.9: the lines carry wall-clock time, the wait runs on the monotonic clock).
    assert min(later - earlier for earlier, later in zip(samples, samples[1:])) >= 0.9 * interval_s


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
    try:  # the child imports torch first: on a loaded machine that alone can take many seconds
        wait_until(lambda: line_count(log) >= 5 or child.poll() is not None, "5 lines from the child")
        assert child.poll() is None, "the child ended before it was killed"
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


def test_stop_wakes_the_thread_out_of_a_long_interval(tmp_path: Path) -> None:
    """stop() ends a thread that waits out 1800 s at once; it does not give up on it after its join timeout."""
    before = set(threading.enumerate())
    monitor = ResourceMonitor(tmp_path / "resources.jsonl", interval_s=1800.0).start()
    [thread] = set(threading.enumerate()) - before
    wait_until(lambda: blocked_in_wait(thread), "the monitor thread waiting out its interval")
    monitor.stop()
    assert not thread.is_alive()  # a thread left waiting would still be alive, for the rest of the 1800 s


def test_sampling_failure_warns_once_and_never_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    failures = []

    def broken() -> None:
        failures.append(1)
        raise OSError("no /proc here")

    monkeypatch.setattr(psutil, "virtual_memory", broken)
    with caplog.at_level(logging.WARNING, logger="videns.monitor"):
        with ResourceMonitor(tmp_path / "resources.jsonl", interval_s=0.02):
            wait_until(lambda: len(failures) >= 3, "the start line and two samples failing")
    assert len(failures) >= 4  # start, two samples or more, stop
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_context_that_shadows_a_measured_key_is_rejected_at_build(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rss_gb"):
        ResourceMonitor(tmp_path / "resources.jsonl", context={"rss_gb": 1.0})


def test_cuda_device_adds_gpu_fields_and_mig_uuid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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


def test_one_sample_costs_training_well_under_one_percent_of_a_short_interval(tmp_path: Path) -> None:
    """What a sample takes from training is the CPU its thread holds, measured on that thread.

    Wall time would also count the fsync's wait for the disk, which holds no GIL and
    takes nothing from training, and every other process that shares the machine.
    """
    monitor = ResourceMonitor(tmp_path / "resources.jsonl", interval_s=3600.0).start()
    cpu_s = []
    for _ in range(50):
        began = time.thread_time()
        monitor._write("sample")  # measure + json + write + fsync, as the thread does
        cpu_s.append(time.thread_time() - began)
    monitor.stop()
    assert len(read_lines(tmp_path / "resources.jsonl")) == 1 + 50 + 1  # every sample was written
    assert statistics.median(cpu_s) < 0.01  # < 1% even of a 1 s interval (~0.5 ms here); the default is 1800 s


def test_release_cached_gpu_memory_is_safe_without_cuda() -> None:
    release_cached_gpu_memory()  # must not raise on a CPU-only machine
