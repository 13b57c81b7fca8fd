"""Checkpoint save and load time: our store against ``torch.save``/``torch.load`` of the same state.

The state is the full-size model with AdamW state (one step taken, so the
moments exist). Our save serializes to safetensors + JSON, hashes every file
(sha256 manifest), writes and fsyncs each file and the folders, renames the
folder into place and purges old ones. A plain ``torch.save`` returns as soon as
the bytes are in the page cache, so it is measured twice: as is, and followed by
``fsync``, which is the durability ours has. Like ours, it writes a new file
each time and removes the older one (writing new files costs more than
overwriting one in place on ext4 here). Methods take turns, round after round. The headline ratio is against
``torch.save`` + fsync (equal durability); the ratio against plain
``torch.save`` is reported next to it. Loads read files the saves just wrote,
so both come from the page cache; ours also verifies the sha256 of every file.
"""

import hashlib
import itertools
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as save_tensors

from videns.bench.measure import Stopwatch, ratio, time_interleaved
from videns.bench.profiles import Profile, describe_model
from videns.bench.proposals import mmap_verified_load, streamed_save
from videns.checkpoint.codec import optimizer_to_parts, rng_to_parts
from videns.checkpoint.store import CheckpointStore
from videns.models.temporal import TemporalAttentionClassifier
from videns.training import persist
from videns.training.optim import LRSchedule, OptimizerConfig, ScheduleConfig, build_optimizer
from videns.training.state import TrainingState

NUM_CLASSES = 4


def measure_checkpoint(profile: Profile, work_dir: Path) -> dict[str, Any]:
    """Median save/load seconds of ours, torch.save (with and without fsync) and torch.load."""
    torch.manual_seed(0)
    model = TemporalAttentionClassifier(profile.feature_dim, NUM_CLASSES, **profile.full_model)
    optimizer = build_optimizer(OptimizerConfig(), model)
    _take_one_step(model, optimizer)
    schedule = LRSchedule(ScheduleConfig(), optimizer, OptimizerConfig().lr)
    root = Path(work_dir) / "checkpoint"
    shutil.rmtree(root, ignore_errors=True)
    store = CheckpointStore(root / "ours", keep=2)
    steps = itertools.count(1)
    torch_dir = root / "torch"
    torch_dir.mkdir(parents=True)
    repeats = profile.checkpoint_repeats

    def ours_save() -> None:
        persist.save_checkpoint(store, model, optimizer, schedule, TrainingState(0, "bench", global_step=next(steps)))

    def ours_load() -> None:
        _, files = store.load_latest()
        persist.restore_checkpoint(files, model, optimizer, schedule)

    def torch_save(fsync: bool) -> None:
        _torch_save(model, optimizer, torch_dir / f"checkpoint-{next(steps):09d}.pt", fsync)

    def torch_load() -> None:
        state = torch.load(max(torch_dir.iterdir()), weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])

    proposed = CheckpointStore(root / "proposed", keep=2)

    def proposed_save() -> None:
        streamed_save(proposed.root, model, optimizer, schedule, TrainingState(0, "bench", global_step=next(steps)))
        proposed.purge()

    # Methods take turns, so drifting load on a shared machine spreads over all of them.
    results = time_interleaved({
        "ours_save": ours_save,
        "torch_save": lambda: torch_save(fsync=False),
        "torch_save_fsync": lambda: torch_save(fsync=True),
        "proposed_save": proposed_save,
    }, repeats)
    results.update(time_interleaved({
        "ours_load": ours_load,
        "torch_load": torch_load,
        "proposed_load": lambda: mmap_verified_load(proposed.step_folders()[0], model, optimizer, schedule),
    }, repeats))
    # The library's own verified read must accept what the prototype wrote.
    proposed_readable = proposed.load_latest() is not None
    latest = store.step_folders()[0]
    num_params = sum(p.numel() for p in model.parameters())
    save = results["ours_save"]["median_s"]
    return {
        "workload": {"model": describe_model(profile.full_model, num_params), "batch": "n/a", "workers": 0,
                     "device": "cpu", "state": "model + AdamW moments (fp32)", "disk": str(root)},
        **results,
        "bytes": {"ours": sum(f.stat().st_size for f in latest.iterdir()), "torch": max(torch_dir.iterdir()).stat().st_size},
        "ours_save_breakdown": _save_breakdown(model, optimizer, root / "breakdown"),
        "checkpoint_save_ratio": ratio(save, results["torch_save_fsync"]["median_s"]),
        "checkpoint_save_ratio_vs_plain_torch_save": ratio(save, results["torch_save"]["median_s"]),
        "checkpoint_load_ratio": ratio(results["ours_load"]["median_s"], results["torch_load"]["median_s"]),
        "headline": "checkpoint_save_ratio = ours / (torch.save + fsync): equal durability",
        "proposal": {"what": "videns.bench.proposals: streamed_save / mmap_verified_load, same format",
                     "library_reads_it": proposed_readable,
                     "save_ratio": ratio(results["proposed_save"]["median_s"], results["torch_save_fsync"]["median_s"]),
                     "load_ratio": ratio(results["proposed_load"]["median_s"], results["torch_load"]["median_s"])},
    }


def _take_one_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Fill AdamW's moments without a forward pass: random gradients, one step."""
    gen = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen) * 1e-3
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


def _save_breakdown(model, optimizer, folder: Path) -> dict[str, float]:
    """Where our save's time goes, one pass each: serialize, sha256, write + fsync."""
    with Stopwatch() as serialize:
        opt_tensors, _ = optimizer_to_parts(optimizer)
        rng_tensors, _ = rng_to_parts()
        blobs = [persist.model_bytes(model), save_tensors({**opt_tensors, **rng_tensors})]
    with Stopwatch() as digest:
        for blob in blobs:
            hashlib.sha256(blob).hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    with Stopwatch() as write:
        for i, blob in enumerate(blobs):
            with open(folder / f"part-{i}", "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
    shutil.rmtree(folder, ignore_errors=True)
    return {"serialize_s": serialize.seconds, "sha256_s": digest.seconds, "write_fsync_s": write.seconds,
            "bytes": sum(len(b) for b in blobs)}
