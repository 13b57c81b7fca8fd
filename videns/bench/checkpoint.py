"""Checkpoint save and load time: our store against ``torch.save`` of the same state.

The state is the full-size model with AdamW state (one step taken, so the
moments exist). Our save writes safetensors + JSON straight from tensor memory,
hashes every file (sha256 manifest), fsyncs each file and the folders, renames
the folder into place and purges old ones. By default that commit runs in a
background thread and the training loop waits only for a copy of the state into
reused host buffers. A plain ``torch.save`` returns as soon as the bytes are in
the page cache, so it is measured twice: as is, and followed by ``fsync``, the
durability ours has. Like ours, it writes a new file each time and removes the
older one. Methods take turns, round after round.

Three views of our save, all reported:

- ``ours_save``: seconds until ``save()`` returns (background commit), which is
  what a training loop that saves and goes on waits for;
- ``ours_save_durable``: seconds until the checkpoint is on disk (save, then
  wait for the commit): what a synchronous save costs;
- ``stall``: the cost to training that keeps running. Each round makes our
  save, then takes training steps until the background commit is on disk,
  then takes as many steps again with nothing else running. The stall is the
  first run's time minus the second's: the save itself plus whatever the
  commit took from the training steps by competing for cores, memory bandwidth
  and the disk. A commit that only moved its cost onto the training thread's
  cores would show here.

The headline ``checkpoint_save_ratio`` is our stall / ``torch.save`` + fsync.
``torch.save`` + fsync blocks the loop from start to end and leaves nothing
running behind it, so the stall it causes is its own duration, timed in the
save rounds.

Loads are not compared with ``torch.load``: loading its file means unpickling,
which this project never does. Our load is compared with the same restore from
the same safetensors files without the manifest check (``plain_load``), so the
ratio is what verification costs. Both read the files the saves just wrote,
from the page cache.
"""

import itertools
import os
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from videns.bench.measure import ratio, summarize, time_interleaved
from videns.bench.profiles import Profile, describe_model
from videns.checkpoint.background import CommitQueue
from videns.checkpoint.store import CheckpointStore
from videns.member import checkpoint as member_checkpoint
from videns.models.temporal import TemporalAttentionClassifier
from videns.training.optim import LRSchedule, OptimizerConfig, ScheduleConfig, build_optimizer, fused_kernels_on
from videns.training.state import TrainingState

NUM_CLASSES = 4


def measure_checkpoint(
    profile: Profile,
    work_dir: Path,
    training_step: Callable[[], None] | None = None,
    device: torch.device = torch.device("cpu"),
) -> dict[str, Any]:
    """Median save/load seconds of ours and torch's, and the stall our save causes to ongoing training.

    ``training_step`` is one step of the training the stall is measured against (default: none, no stall).
    The state lives on ``device``, as a member's does: on CUDA, our save copies it into pinned buffers.
    """
    root = Path(work_dir) / "checkpoint"
    shutil.rmtree(root, ignore_errors=True)
    m = _Methods(profile, root, device)
    try:
        results = time_interleaved(
            {
                "ours_save_durable": m.ours_background,
                "torch_save": lambda: m.torch_save(fsync=False),
                "torch_save_fsync": lambda: m.torch_save(fsync=True),
            },
            profile.checkpoint_repeats,
        )
        results["ours_save"] = summarize(m.blocking_s[-profile.checkpoint_repeats :], warmup=1)
        # No warm-up round for loads: the files were just written, so every method reads the page cache.
        results.update(
            time_interleaved(
                {"ours_load": m.ours_load, "plain_load": m.plain_load}, profile.checkpoint_repeats, warmup=0
            )
        )
        stall = measure_stall(m, training_step, profile.checkpoint_repeats) if training_step else None
    finally:
        m.close()
    num_params = sum(p.numel() for p in m.model.parameters())
    torch_fsync = results["torch_save_fsync"]["median_s"]
    out = {
        "workload": {
            "model": describe_model(profile.full_model, num_params),
            "batch": "n/a",
            "workers": 0,
            "device": str(device),
            "state": "model + AdamW moments (fp32)",
            "disk": str(root),
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
        },
        **results,
        "bytes": {
            "ours": sum(f.stat().st_size for f in m.store.step_folders()[0].iterdir()),
            "torch": m.latest_torch_file().stat().st_size,
        },
        "checkpoint_save_returns_ratio": ratio(results["ours_save"]["median_s"], torch_fsync),
        "checkpoint_save_durable_ratio": ratio(results["ours_save_durable"]["median_s"], torch_fsync),
        "checkpoint_save_ratio_vs_plain_torch_save": ratio(
            results["ours_save"]["median_s"], results["torch_save"]["median_s"]
        ),
        "checkpoint_load_ratio": ratio(results["ours_load"]["median_s"], results["plain_load"]["median_s"]),
    }
    if stall is not None:
        out["stall"] = stall
        out["checkpoint_save_ratio"] = ratio(stall["ours_median_s"], torch_fsync)
        out["headline"] = (
            "checkpoint_save_ratio = extra seconds ongoing training takes with our background save "
            "/ torch.save + fsync seconds, which block it (equal durability: both on disk when the "
            "work ends)"
        )
    else:
        out["checkpoint_save_ratio"] = out["checkpoint_save_returns_ratio"]
        out["headline"] = "checkpoint_save_ratio = seconds until our save returns / torch.save + fsync"
    return out


def measure_stall(m: "_Methods", step: Callable[[], None], repeats: int, max_steps: int = 500) -> dict[str, Any]:
    """Extra seconds training takes because of our save, per round (see the module docstring).

    No warm-up round: the save rounds before this one have warmed the buffers and the step's kernels.
    """
    rounds = []
    for _ in range(repeats):
        start = time.perf_counter()
        m.ours_save()
        steps = 0
        while m.store.commits.busy and steps < max_steps:
            step()
            steps += 1
        m.store.wait()
        with_save = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(steps):
            step()
        alone = time.perf_counter() - start
        rounds.append({"steps": steps, "with_save_s": with_save, "alone_s": alone, "stall_s": with_save - alone})
    stall = [r["stall_s"] for r in rounds]
    per_step = [r["alone_s"] / r["steps"] for r in rounds if r["steps"]]
    return {
        "rounds": rounds,
        "ours_s": stall,
        "ours_median_s": statistics.median(stall),
        "step_alone_s": statistics.median(per_step) if per_step else float("nan"),
    }


class _Methods:
    """The state to save (full-size model, AdamW with moments) and each way of saving and loading it."""

    def __init__(self, profile: Profile, root: Path, device: torch.device = torch.device("cpu")):
        torch.manual_seed(0)
        self.device = device
        self.model = TemporalAttentionClassifier(profile.feature_dim, NUM_CLASSES, **profile.full_model).to(device)
        self.optimizer = build_optimizer(OptimizerConfig(), self.model, fused=fused_kernels_on(device))
        _take_one_step(self.model, self.optimizer)
        self.schedule = LRSchedule(ScheduleConfig(), self.optimizer, OptimizerConfig().lr)
        self.store = CheckpointStore(root / "ours", keep=2, commits=CommitQueue(background=True))
        self.torch_dir = root / "torch"
        self.torch_dir.mkdir(parents=True)
        self.steps = itertools.count(1)
        self.blocking_s: list[float] = []

    def _state(self) -> TrainingState:
        return TrainingState(0, "bench", global_step=next(self.steps))

    def ours_save(self) -> None:
        start = time.perf_counter()
        member_checkpoint.save_checkpoint(self.store, self.model, self.optimizer, self.schedule, self._state())
        self.blocking_s.append(time.perf_counter() - start)

    def ours_background(self) -> None:
        """Save, then wait for the commit, so the next method is timed on a quiet machine."""
        self.ours_save()
        self.store.wait()

    def ours_load(self) -> None:
        member_checkpoint.restore_checkpoint(self.store.load_latest(), self.model, self.optimizer, self.schedule)

    def torch_save(self, fsync: bool) -> None:
        _torch_save(self.model, self.optimizer, self.torch_dir / f"checkpoint-{next(self.steps):09d}.pt", fsync)

    def latest_torch_file(self) -> Path:
        return max(self.torch_dir.iterdir())

    def plain_load(self) -> None:
        member_checkpoint.restore_checkpoint(
            _UnverifiedFiles(self.store.step_folders()[0]), self.model, self.optimizer, self.schedule
        )

    def close(self) -> None:
        self.store.commits.close()


class _UnverifiedFiles:
    """A checkpoint folder's files read as they are, without the manifest check."""

    def __init__(self, folder: Path):
        self.folder = folder

    def read_bytes(self, name: str) -> bytes:
        return (self.folder / name).read_bytes()

    def load_tensors(self, name: str) -> dict[str, torch.Tensor]:
        return load_file(self.folder / name)


def _take_one_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Fill AdamW's moments without a forward pass: random gradients, one step."""
    gen = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.grad = (torch.randn(p.shape, generator=gen) * 1e-3).to(p.device)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _torch_save(model, optimizer, path: Path, fsync: bool) -> None:
    """A new file per save, then the older ones removed, as a trainer keeping its latest checkpoint would."""
    with open(path, "wb") as f:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, f)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    for old in path.parent.glob("checkpoint-*.pt"):
        if old != path:
            old.unlink()
