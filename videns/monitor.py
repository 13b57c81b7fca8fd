"""A background thread that appends resource samples to a JSON-lines file.

One line per sample: at ``start()``, every ``interval_s`` and at ``stop()``.
The file is opened in append mode so a requeued member keeps writing to the
same log, and every line is flushed and fsynced so a SIGKILL (preemption,
OOM killer, time limit) loses nothing that was already written. The reader
side lives in :mod:`videns.ensemble.resources`.

Memory sizes are GiB (``2**30`` bytes); the keys keep the ``_gb``
names of the reference recipe's resource log, so the two can be compared.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO

import psutil
import torch

logger = logging.getLogger(__name__)

GIB = float(2**30)

EVENT_START = "start"
EVENT_SAMPLE = "sample"
EVENT_STOP = "stop"

# Keys the monitor writes itself; a context key may not shadow one of them.
RESERVED_KEYS = frozenset(
    {
        "event", "time", "iso_time", "pid", "host", "device",
        "cpu_percent", "system_cpu_percent", "ram_used_gb", "ram_percent", "rss_gb",
        "gpu_allocated_gb", "gpu_reserved_gb", "gpu_max_allocated_gb", "gpu_name",
        "mig_instance", "cuda_visible_devices", "device_used_gb", "device_total_gb",
        "error",
    }
)  # fmt: skip

# How long stop() waits for the thread; a sample takes well under a second.
_JOIN_TIMEOUT_S = 5.0


def release_cached_gpu_memory() -> None:
    """Return memory the caching allocator holds but no tensor uses.

    For processes that train several members in a row: on a ~10 GB MIG slice
    the previous member's reserved-but-free blocks would otherwise count
    against the next one.
    """
    if not torch.cuda.is_initialized():
        return  # nothing is cached, and a full gc.collect() takes ~0.2 s once torch is loaded
    gc.collect()  # drop unreachable tensors first, or their blocks stay reserved
    torch.cuda.empty_cache()


def visible_device_entry(index: int) -> str | None:
    """The ``CUDA_VISIBLE_DEVICES`` entry that CUDA device ``index`` maps to, if any."""
    raw = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not raw:
        return None
    entries = [entry.strip() for entry in raw.split(",") if entry.strip()]
    return entries[index] if 0 <= index < len(entries) else None


def mig_instance_from_env(index: int) -> str | None:
    """The MIG UUID of CUDA device ``index`` when SLURM exposes the slice by UUID."""
    entry = visible_device_entry(index)
    return entry if entry is not None and entry.startswith("MIG-") else None


def _resolve_cuda_device(device: torch.device | str | None) -> torch.device | None:
    """The CUDA device to report on, or None when sampling CPU only."""
    if device is None:
        return None
    resolved = torch.device(device)
    return resolved if resolved.type == "cuda" else None


class ResourceMonitor:
    """Appends one JSON line of CPU, RAM and GPU usage per sample to ``log_path``.

    Every line carries ``event``, ``time``, ``iso_time``, ``pid``, ``host``,
    ``device``, ``cpu_percent``, ``system_cpu_percent``, ``ram_used_gb``,
    ``ram_percent``, ``rss_gb``; with a CUDA device also ``gpu_allocated_gb``,
    ``gpu_reserved_gb``, ``gpu_max_allocated_gb``, ``gpu_name``,
    ``mig_instance``, ``cuda_visible_devices``, ``device_used_gb`` and
    ``device_total_gb``; then every key of ``context``.

    Failures while sampling are logged as one warning and never raised: the
    monitor must not be the reason a training run dies.
    """

    def __init__(
        self,
        log_path: Path,
        interval_s: float = 1800.0,
        context: Mapping[str, object] | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        """
        Args:
            log_path: JSON-lines file, created with its parents, appended to.
            interval_s: seconds between periodic samples; must be positive.
            context: JSON-serialisable fields copied into every line (job id,
                array task id, restart count, seed); the library does not
                interpret them.
            device: the training device; GPU fields are written only for CUDA.
        """
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {interval_s!r}")
        self._context = dict(context or {})
        clashes = sorted(RESERVED_KEYS.intersection(self._context))
        if clashes:
            raise ValueError(f"context keys {clashes} clash with keys the monitor writes")
        json.dumps(self._context)  # fail now, at build time, not in the thread
        self.log_path = Path(log_path)
        self.interval_s = float(interval_s)
        self._device_label = str(device) if device is not None else "cpu"
        self._cuda_device = _resolve_cuda_device(device)
        self._process = psutil.Process()
        self._host = socket.gethostname()
        self._lock = threading.Lock()  # one writer at a time: thread vs. stop()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._file: IO[str] | None = None
        self._warned = False
        self._gpu_static: dict[str, object] = {}

    # -- lifecycle -------------------------------------------------------

    def start(self) -> ResourceMonitor:
        """Write the "start" line and begin periodic sampling."""
        if self._thread is not None:
            self._warn_once("ResourceMonitor.start() called twice; ignoring the second call")
            return self
        try:
            self._open_log()
        except Exception as err:
            self._warn_once(f"resource monitor disabled, cannot open {self.log_path}: {err}")
            return self
        try:
            self._gpu_static = self._probe_gpu_static()
        except Exception as err:
            self._warn_once(f"resource monitor writes no GPU fields: {err!r}")
            self._cuda_device = None
        self._write(EVENT_START)
        # A fresh event per run: a thread that outlived stop()'s join timeout
        # must not be woken back into service by a later start().
        self._stop_event = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(self._stop_event,),
            name=f"ResourceMonitor[{self.log_path.name}]",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, error: str | None = None) -> None:
        """Wake the thread, write the "stop" line and close the log.

        ``error`` (for example the exception that ended training) is recorded
        on the stop line so a crash can be told apart from a clean finish.
        """
        if self._thread is None:
            return
        self._stop_event.set()
        self._thread.join(timeout=_JOIN_TIMEOUT_S)
        self._thread = None
        self._write(EVENT_STOP, {"error": error} if error else None)
        with self._lock:
            if self._file is not None:
                try:
                    self._file.close()
                except OSError as err:  # a full disk fails the flush again here; the error in flight matters more
                    self._warn_once(f"resource monitor could not close {self.log_path}: {err!r}")
                self._file = None

    def __enter__(self) -> ResourceMonitor:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(error=f"{exc_type.__name__}: {exc}" if exc_type is not None else None)

    # -- sampling --------------------------------------------------------

    def _measure(self, event: str) -> dict[str, object]:
        """Measure once and return the record; the caller holds the lock."""
        now = time.time()
        record: dict[str, object] = {
            "event": event,
            "time": now,
            "iso_time": datetime.fromtimestamp(now, UTC).isoformat(),
            "pid": os.getpid(),
            "host": self._host,
            "device": self._device_label,
        }
        record.update(self._cpu_fields(event))
        if self._cuda_device is not None:
            record.update(self._gpu_fields())
        record.update(self._context)
        return record

    def _run(self, stop_event: threading.Event) -> None:
        # Event.wait rather than sleep, so stop() wakes the thread at once.
        while not stop_event.wait(self.interval_s):
            self._write(EVENT_SAMPLE)

    def _cpu_fields(self, event: str) -> dict[str, object]:
        if event == EVENT_START:
            # psutil's per-process percent is relative to the previous call and
            # its first call returns 0.0, so the start line reports the average
            # since the process began, and primes the counter for later lines.
            self._process.cpu_percent(interval=None)
            cpu = self._process.cpu_times()
            age_s = max(time.time() - self._process.create_time(), 1e-6)
            process_percent = 100.0 * (cpu.user + cpu.system) / age_s
        else:
            process_percent = self._process.cpu_percent(interval=None)
        memory = psutil.virtual_memory()
        return {
            "cpu_percent": process_percent,
            # Non-blocking: percent since the previous call (or psutil's import).
            "system_cpu_percent": psutil.cpu_percent(interval=None),
            "ram_used_gb": memory.used / GIB,
            "ram_percent": memory.percent,
            "rss_gb": self._process.memory_info().rss / GIB,
        }

    def _probe_gpu_static(self) -> dict[str, object]:
        """Fields that do not change during a run, looked up once at start."""
        if self._cuda_device is None:
            return {}
        if not torch.cuda.is_available():
            self._warn_once(f"device {self._device_label} requested but CUDA is not available")
            self._cuda_device = None
            return {}
        if self._cuda_device.index is None:
            # Bare "cuda" means the current device; pin it so every line agrees.
            self._cuda_device = torch.device("cuda", torch.cuda.current_device())
        return {
            "gpu_name": torch.cuda.get_device_name(self._cuda_device),
            "mig_instance": mig_instance_from_env(self._cuda_device.index),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }

    def _gpu_fields(self) -> dict[str, object]:
        device = self._cuda_device
        # The device's own count (a MIG slice's, on MIG) includes the CUDA context and
        # other processes: what an out-of-memory depends on, unlike the allocator's.
        fields: dict[str, object] = {
            "gpu_allocated_gb": torch.cuda.memory_allocated(device) / GIB,
            "gpu_reserved_gb": torch.cuda.memory_reserved(device) / GIB,
            "gpu_max_allocated_gb": torch.cuda.max_memory_allocated(device) / GIB,
            **self._gpu_static,
        }
        try:
            free, total = torch.cuda.mem_get_info(device)
        except RuntimeError as err:  # a CUDA error must not cost the line its other fields
            logger.debug("cudaMemGetInfo failed: %s", err)
            return fields
        return {**fields, "device_used_gb": (total - free) / GIB, "device_total_gb": total / GIB}

    # -- writing ---------------------------------------------------------

    def _open_log(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.log_path, "a", encoding="utf-8")
        # A kill mid-write can leave a partial last line; without a newline our
        # first line would be glued onto it and both would be unreadable.
        if self._file.tell() > 0 and not _ends_with_newline(self.log_path):
            self._file.write("\n")

    def _write(self, event: str, extra: Mapping[str, object] | None = None) -> None:
        try:
            with self._lock:  # psutil's percent baseline and the file are shared state
                if self._file is None:
                    return
                record = self._measure(event)
                record.update(extra or {})
                self._file.write(json.dumps(record) + "\n")
                self._file.flush()
                os.fsync(self._file.fileno())  # survive SIGKILL and node loss
        except Exception as err:
            self._warn_once(f"resource monitor sample failed ({event}): {err!r}")

    def _warn_once(self, message: str) -> None:
        if self._warned:
            logger.debug(message)
            return
        self._warned = True
        logger.warning("%s (further monitor problems are logged at debug level)", message)


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"
