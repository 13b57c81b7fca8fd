"""Train one ensemble member, resuming exactly where a previous run stopped."""

import logging
import random
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from videns.checkpoint.background import CommitQueue
from videns.checkpoint.store import CheckpointStore
from videns.config import MemberConfig, dump_config
from videns.data.inspect import DatasetInfo
from videns.data.statistics import feature_statistics
from videns.device import cap_gpu_memory, describe_device, resolve_device
from videns.errors import CheckpointError
from videns.folders import MemberFolder, check_private, make_private
from videns.io import WriteFailed, write_json_even_when_full, write_text_if_changed, writing_into
from videns.locks import FolderLock
from videns.logs import FILE_ONLY, setup_logging
from videns.member.checkpoint import check_resumable, restore_checkpoint
from videns.member.data import MemberData, ensure_data, prepare_member_data
from videns.member.ledger import failed_progress, failure_cause, read_mark, record_restart
from videns.member.loop import EpochHook, MemberLoop, MemberOutcome, outcome_of, write_history
from videns.member.state import max_epochs_raised
from videns.models.standardize import standardizer_of
from videns.monitor import ResourceMonitor, release_cached_gpu_memory
from videns.tensorboard import EpochScalars
from videns.training.interrupt import StopSignals
from videns.training.optim import LRSchedule, build_optimizer, describe_optimizer, fused_kernels_on
from videns.training.state import TrainingState

log = logging.getLogger(__name__)

__all__ = ["MemberOutcome", "has_finished", "train_member", "train_member_logged", "seed_everything"]

StopHandler = Callable[[StopSignals, MemberOutcome], None]


def train_member_logged(
    cfg: MemberConfig, context: Mapping[str, Any] | None = None, on_stop: StopHandler | None = None
) -> MemberOutcome:
    """Train the member as a process does: logging to its train.log, stop signals caught.

    ``on_stop`` runs after a signal stopped (and saved) the member, while the
    signals are still caught: a cluster task hands over to its requeue there.
    """
    inputs = prepare_inputs(cfg)
    with member_folder_locked(cfg):  # a second writer refuses before it logs anything there
        setup_logging(MemberFolder(cfg.out_dir).log)  # the file comes lazily
        if context:  # a cluster task: say where it runs before anything else can fail
            log.info("member seed %d starting in %s (%s)", cfg.seed, cfg.out_dir, dict(context))
        with StopSignals() as stop:
            outcome = train_member(cfg, stop, context, inputs=inputs)
            if outcome.status == "interrupted" and on_stop is not None:
                on_stop(stop, outcome)
    return outcome


def member_folder_locked(cfg: MemberConfig) -> FolderLock:
    """The member folder, checked, made private and locked for this process (re-entrant within it)."""
    check_private(cfg.out_dir, cfg.allow_shared_group)  # before anything is written there
    with writing_into(cfg.out_dir, "the member folder"):  # a read-only run folder: one line, before any work
        make_private(cfg.out_dir)
    return FolderLock(MemberFolder(cfg.out_dir).lock, "member folder")


@dataclass
class Inputs:
    """The member's data, checked and loaded, and its device: all found before its folder is touched."""

    info: DatasetInfo
    data: MemberData
    device: torch.device


def prepare_inputs(cfg: MemberConfig) -> Inputs:
    """Every data problem, and items too long for the model, as one line before anything is written.

    Two processes started for one member both get here; the member folder's lock then lets one of them on.
    """
    info = ensure_data(cfg.data)
    device = resolve_device(cfg.trainer.device)
    with torch.device("meta"):  # the model's own checks, without allocating it
        model = cfg.model(info.feature_dim, info.num_classes)
    for split in info.splits.values():
        model.check_item_length(split.max_frames, str(split.path))
    data = prepare_member_data(
        cfg.data, info, cfg.seed, cfg.trainer.batch_size, cfg.trainer.eval_batch_size, pin_memory=device.type == "cuda"
    )
    return Inputs(info, data, device)


def train_member(
    cfg: MemberConfig,
    stop: StopSignals | None = None,
    context: Mapping[str, Any] | None = None,
    on_epoch_end: EpochHook | None = None,
    inputs: Inputs | None = None,
) -> MemberOutcome:
    """Train (or continue) the member in ``cfg.out_dir`` until it finishes or a stop signal arrives.

    ``context`` is added to every resource-monitor line (job ids, restart count).
    ``on_epoch_end`` gets each epoch's history record once the epoch's checkpoint is
    saved (its commit may still be writing); it may raise (e.g. a pruned sweep trial)
    without losing work, since the commit reaches the disk before the error goes on.
    ``inputs``: what :func:`prepare_inputs` made, when the caller made them already.
    """
    try:
        inputs = inputs or prepare_inputs(cfg)
        with member_folder_locked(cfg), write_failures_recorded(MemberFolder(cfg.out_dir), context or {}):
            return _train_member(cfg, inputs, stop, context, on_epoch_end)
    except BaseException as err:
        # The loop's frames hold the DataLoaders: cleared, their workers shut down now. Kept alive by the
        # traceback, they would ignore the SIGTERM that the interpreter's exit sends, and it would wait forever.
        traceback.clear_frames(err.__traceback__)
        raise
    finally:
        # A process may train several members in a row (sweep trials): once this
        # one's tensors are gone, hand their cached GPU memory back.
        release_cached_gpu_memory()


@contextmanager
def write_failures_recorded(folder: MemberFolder, context: Mapping[str, Any]) -> Iterator[None]:
    """When a write fails, leave the member folder saying why before the error goes on up.

    By then the failed write's temporary folder is gone (it is removed before the
    error is made), so the small writes here usually find room even on the disk
    that filled up: train.log gets the line, and progress.json says ``failed`` with
    it, so that the next start counts a ``disk_full`` or ``error`` restart, not a kill.
    """
    try:
        yield
    except WriteFailed as err:
        log.error("%s", err, extra=FILE_ONLY)  # the entry point prints it on stderr
        record = failed_progress(folder.progress(), str(err), failure_cause(err), context, time.time())
        if not write_json_even_when_full(folder.progress_file, record):
            log.warning(
                "%s: could not record the failure either; the next start will count it as a kill", folder.progress_file
            )
        raise


def _train_member(
    cfg: MemberConfig,
    inputs: Inputs,
    stop: StopSignals | None,
    context: Mapping[str, Any] | None,
    on_epoch_end: EpochHook | None,
) -> MemberOutcome:
    info, data, device = inputs.info, inputs.data, inputs.device
    _start_gpu_memory_afresh(device)
    cap_gpu_memory(device, cfg.trainer.gpu_memory_gb)
    seed_everything(cfg.seed)
    model = cfg.model(info.feature_dim, info.num_classes).to(device)
    standardize_inputs(model, data)
    optimizer = build_optimizer(cfg.optimizer, model, fused=fused_kernels_on(device))
    log.info(
        "member seed %d on %s, precision %s, %s",
        cfg.seed,
        describe_device(device),
        cfg.trainer.precision,
        describe_optimizer(optimizer),
    )
    schedule = LRSchedule(cfg.schedule, optimizer, cfg.optimizer.lr)
    folder = MemberFolder(cfg.out_dir)
    commits = CommitQueue(background=cfg.checkpoint.background)
    store = CheckpointStore(folder.checkpoints, cfg.checkpoint.keep, commits)
    previous = folder.progress()  # how the last run ended, before this one rewrites it
    state = _restore_or_start(cfg, store, model, optimizer, schedule)
    write_text_if_changed(folder.config, dump_config(cfg))
    write_history(folder, state.history)
    if state.finished:
        log.info(
            "member seed %d already finished (%s) at epoch %d; nothing to do", cfg.seed, state.stop_reason, state.epoch
        )
        return outcome_of(state, "finished")
    context = {"run_started": time.time(), **(context or {})}  # a cluster task may know its job's start
    if _is_restart(folder, previous):
        restart = record_restart(folder, previous, state.global_step, context)
        log.info(
            "restart after %s: %d step(s) replayed, %.0f s since it stopped",
            restart["cause"],
            restart["replayed_steps"],
            restart["queued_s"],
        )
    monitor_context = {"seed": cfg.seed, **context}
    with ResourceMonitor(folder.resources, cfg.trainer.monitor_minutes * 60, monitor_context, device):
        loop = MemberLoop(cfg, data, model, optimizer, schedule, store, state, device, stop, context)
        loop.on_epoch_end = on_epoch_end
        with writing_into(folder.tensorboard, "the tensorboard events"):
            loop.scalars = EpochScalars(folder.tensorboard, state.global_step) if cfg.trainer.tensorboard else None
        try:
            if previous.get("status") == "failed":
                # Read as the member's state (jobs.status) until the first save, and it runs again now. Where
                # not even this fits on the disk, the restart fails here, before any step is spent.
                loop.record_progress("running")
            return loop.run()
        finally:
            commits.close()  # whatever ends the loop, the last save reaches the disk first
            if loop.scalars is not None:
                with writing_into(folder.tensorboard, "the tensorboard events"):
                    loop.scalars.close()


def standardize_inputs(model: torch.nn.Module, data: MemberData) -> None:
    """Give a standardising model the training file's per-feature statistics.

    Computed on every start, resumed or not, as they depend on the file alone; a
    resumed member then loads the statistics saved in its checkpoint over them.
    """
    standardizer = standardizer_of(model)
    if standardizer is None:
        return
    mean, std = feature_statistics(data.train_file)
    standardizer.set_statistics(mean, std)
    log.info(
        "inputs standardised per feature from %s: mean %.3g..%.3g, std %.3g..%.3g",
        data.train_file.path.name,
        mean.min(),
        mean.max(),
        std.min(),
        std.max(),
    )


def has_finished(folder: MemberFolder, cfg: MemberConfig) -> bool:
    """Would :func:`train_member` return at once? Finished, and not by a ``max_epochs`` that ``cfg`` has raised
    since (then it trains on, as :func:`_restore_or_start` decides)."""
    result = folder.result()
    if result.get("status") != "finished":
        return False
    return not max_epochs_raised(result.get("stop_reason"), int(result.get("epoch", 0)), cfg.trainer.max_epochs)


def _is_restart(folder: MemberFolder, previous: dict[str, Any]) -> bool:
    """Did an earlier run of this member stop before it finished (saved or not)?"""
    if previous:
        return previous.get("status") in ("running", "interrupted", "failed")
    return read_mark(folder.reached_step) is not None  # killed before its first save


def _restore_or_start(
    cfg: MemberConfig, store: CheckpointStore, model, optimizer, schedule: LRSchedule
) -> TrainingState:
    if cfg.checkpoint.resume == "never":
        if store.step_folders():
            raise CheckpointError(
                f"{store.root}: holds checkpoints and checkpoint.resume=never; "
                "use another --out_dir rather than overwrite them"
            )
        return TrainingState(seed=cfg.seed, config_hash=cfg.config_hash)
    checkpoint = store.load_latest()
    if checkpoint is None:
        return TrainingState(seed=cfg.seed, config_hash=cfg.config_hash)
    folder = checkpoint.path
    state = restore_checkpoint(checkpoint, model, optimizer, schedule)
    check_resumable(state, cfg.seed, cfg.config_hash, cfg.checkpoint.force, folder)
    if state.finished and max_epochs_raised(state.stop_reason, state.epoch, cfg.trainer.max_epochs):
        state.finished, state.stop_reason = False, ""
    if not state.finished:
        state.restarts += 1
        log.info(
            "resuming seed %d from %s: epoch %d, batch %d (restart %d)",
            cfg.seed,
            folder.name,
            state.epoch + 1,
            state.batches_done,
            state.restarts,
        )
    return state


def _start_gpu_memory_afresh(device: torch.device) -> None:
    """Hand back what an earlier member in this process left cached, and count this one's peak alone.

    Releasing at the end is not enough: when a member ends by an exception (a
    pruned sweep trial), the traceback still holds its tensors at that point.
    """
    release_cached_gpu_memory()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
