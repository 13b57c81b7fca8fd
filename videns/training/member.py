"""Train one ensemble member, resuming exactly where a previous run stopped."""

import logging
import os
import random
import socket
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from typing import Any, Callable, Literal, Mapping

import numpy as np
import torch
from tqdm import tqdm

from videns.checkpoint.background import CommitQueue
from videns.checkpoint.policy import SavePolicy
from videns.checkpoint.store import CheckpointStore
from videns.config import MemberConfig, dump_config
from videns.device import resolve_device
from videns.errors import CheckpointError
from videns.metrics import classification_metrics
from videns.monitor import ResourceMonitor, release_cached_gpu_memory
from videns.training import persist
from videns.training.data_setup import MemberData, alpha_tensor, ensure_data, prepare_member_data
from videns.training.evaluate import predict_probs
from videns.training.interrupt import StopSignals
from videns.training.loss import FocalLoss
from videns.training.optim import LRSchedule, build_optimizer
from videns.training.state import TrainingState
from videns.training.step import train_step
from videns.tensorboard import EpochScalars

log = logging.getLogger(__name__)


@dataclass
class MemberOutcome:
    """How a call to :func:`train_member` ended."""

    status: Literal["finished", "interrupted"]
    epoch: int
    best_val_accuracy: float
    best_epoch: int
    stop_reason: str
    signum: int | None = None


EpochHook = Callable[[dict[str, Any]], None]


def train_member(cfg: MemberConfig, stop: StopSignals | None = None, context: Mapping[str, Any] | None = None,
                 on_epoch_end: EpochHook | None = None) -> MemberOutcome:
    """Train (or continue) the member in ``cfg.out_dir`` until it finishes or a stop signal arrives.

    ``context`` is added to every resource-monitor line (job ids, restart count).
    ``on_epoch_end`` gets each epoch's history record after the epoch's checkpoint
    is committed, so it may raise (e.g. a pruned sweep trial) without losing work.
    """
    try:
        return _train_member(cfg, stop, context, on_epoch_end)
    except BaseException as err:
        # The loop's frames hold the DataLoaders: cleared, their workers shut down now. Kept alive by the
        # traceback, they would ignore the SIGTERM that the interpreter's exit sends, and it would wait forever.
        traceback.clear_frames(err.__traceback__)
        raise
    finally:
        # A process may train several members in a row (sweep trials): once this
        # one's tensors are gone, hand their cached GPU memory back.
        release_cached_gpu_memory()


def _train_member(cfg: MemberConfig, stop: StopSignals | None, context: Mapping[str, Any] | None,
                  on_epoch_end: EpochHook | None) -> MemberOutcome:
    info = ensure_data(cfg.data)  # every data problem surfaces before any work
    device = resolve_device(cfg.trainer.device)
    _start_gpu_memory_afresh(device)
    seed_everything(cfg.seed)
    model = cfg.model(info.feature_dim, info.num_classes).to(device)
    data = prepare_member_data(cfg.data, info, cfg.seed, cfg.trainer.batch_size, cfg.trainer.eval_batch_size,
                               pin_memory=device.type == "cuda")
    optimizer = build_optimizer(cfg.optimizer, model, fused=device.type == "cuda")
    schedule = LRSchedule(cfg.schedule, optimizer, cfg.optimizer.lr)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    commits = CommitQueue(background=cfg.checkpoint.background)
    store = CheckpointStore(cfg.out_dir / persist.CHECKPOINTS_DIR, cfg.checkpoint.keep, commits)
    state = _restore_or_start(cfg, store, model, optimizer, schedule)
    (cfg.out_dir / "config.yaml").write_text(dump_config(cfg))
    persist.write_history(cfg.out_dir, state.history)
    if state.finished:
        log.info("member seed %d already finished (%s) at epoch %d; nothing to do", cfg.seed, state.stop_reason, state.epoch)
        return _outcome(state, "finished")
    monitor_context = {"seed": cfg.seed, **(context or {})}
    with ResourceMonitor(cfg.out_dir / "resources.jsonl", cfg.trainer.monitor_minutes * 60, monitor_context, device):
        loop = MemberLoop(cfg, data, model, optimizer, schedule, store, state, device, stop)
        loop.on_epoch_end = on_epoch_end
        loop.scalars = EpochScalars(cfg.out_dir, state.global_step) if cfg.trainer.tensorboard else None
        try:
            return loop.run()
        finally:
            commits.close()  # whatever ends the loop, the last save reaches the disk first
            if loop.scalars is not None:
                loop.scalars.close()


class MemberLoop:
    """The epoch/step loop of one member; owns when to validate, save and stop."""

    def __init__(self, cfg: MemberConfig, data: MemberData, model, optimizer, schedule: LRSchedule,
                 store: CheckpointStore, state: TrainingState, device: torch.device, stop: StopSignals | None):
        self.cfg, self.data, self.model, self.optimizer = cfg, data, model, optimizer
        self.schedule, self.store, self.state, self.device = schedule, store, state, device
        self.stop = stop
        self.on_epoch_end: EpochHook | None = None
        self.scalars: EpochScalars | None = None
        self.policy = SavePolicy(cfg.checkpoint)
        self.policy.saved(state.global_step)
        alpha = alpha_tensor(data.class_weights, device) if cfg.loss.class_alpha else None
        self.criterion = FocalLoss(alpha, cfg.loss.gamma, cfg.loss.smoothing).to(device)
        use_bf16 = cfg.trainer.precision == "bf16" and device.type == "cuda"
        self.autocast_dtype = torch.bfloat16 if use_bf16 else None
        self.batches_per_epoch = data.batches.batches_per_epoch()

    @property
    def stop_requested(self) -> bool:
        return self.stop is not None and self.stop.requested

    def run(self) -> MemberOutcome:
        while not self.state.finished:
            if not self._train_epoch():
                return self._interrupted()
            self._end_epoch()
            if self.stop_requested and not self.state.finished:
                return self._interrupted()
        return _outcome(self.state, "finished")

    def _train_epoch(self) -> bool:
        """Train the rest of the current epoch; False if stopped by a signal (after saving)."""
        state = self.state
        self.data.batches.set_position(state.epoch, state.batches_done)
        self.model.train()
        loss_sum = torch.tensor(state.loss_sum, dtype=torch.float64, device=self.device)
        started, seconds_before = time.monotonic(), state.epoch_seconds
        for batch in self._progress(self.data.train_loader):
            fractional_epoch = state.epoch + state.batches_done / self.batches_per_epoch
            loss_sum += self._train_step(batch, fractional_epoch).double()
            state.batches_done += 1
            state.global_step += 1
            if state.batches_done < self.batches_per_epoch and (self.stop_requested or self.policy.due(state.global_step)):
                state.loss_sum, state.epoch_seconds = float(loss_sum), seconds_before + time.monotonic() - started
                self._save_checkpoint()
                if self.stop_requested:
                    return False
        state.loss_sum, state.epoch_seconds = float(loss_sum), seconds_before + time.monotonic() - started
        return True

    def _train_step(self, batch, fractional_epoch: float) -> torch.Tensor:
        features, lengths, labels = batch
        on_device = (features.to(self.device, non_blocking=True), lengths, labels.to(self.device, non_blocking=True))
        self.schedule.before_step(fractional_epoch)
        return train_step(self.model, self.optimizer, self.criterion, on_device,
                          autocast_dtype=self.autocast_dtype, grad_clip=self.cfg.optimizer.grad_clip)

    def _end_epoch(self) -> None:
        state, trainer = self.state, self.cfg.trainer
        if self.cfg.data.num_workers:
            self.store.wait()  # validation forks workers: not while the commit thread is writing
        probs, labels, val_loss = predict_probs(self.model, self.data.val_loader, self.device,
                                                self.autocast_dtype, self.criterion)
        metrics = classification_metrics(labels, probs, self.data.info.class_names)
        record = _history_record(state, metrics, val_loss, self.schedule.current_lr(), self.batches_per_epoch)
        self.schedule.after_epoch(metrics["accuracy"])
        if metrics["accuracy"] > state.best_val_accuracy:
            state.best_val_accuracy, state.best_epoch, state.bad_epochs = metrics["accuracy"], record["epoch"], 0
            persist.save_best(self.cfg.out_dir, self.model, self._best_meta(record, metrics), self.store.commits)
        else:
            state.bad_epochs += 1
        if self.scalars is not None:  # on disk before the checkpoint that covers them
            self.scalars.write(record, state.global_step)
        state.history.append(record)
        state.epoch, state.batches_done, state.loss_sum, state.epoch_seconds = state.epoch + 1, 0, 0.0, 0.0
        if trainer.patience and state.bad_epochs >= trainer.patience:
            state.finished, state.stop_reason = True, "early_stop"
        elif state.epoch >= trainer.max_epochs:
            state.finished, state.stop_reason = True, "max_epochs"
        self._save_checkpoint()
        persist.write_history(self.cfg.out_dir, state.history)
        log.info("epoch %d/%d train_loss %.4f val_loss %.4f val_acc %.4f val_f1w %.4f lr %.2e %.1fs%s",
                 record["epoch"], trainer.max_epochs, record["train_loss"], val_loss, metrics["accuracy"],
                 metrics["f1_weighted"], record["lr"], record["seconds"],
                 " (best)" if state.best_epoch == record["epoch"] else "")
        if self.on_epoch_end is not None:
            self.store.wait()  # the hook may raise (a pruned sweep trial): the epoch is on disk first
            self.on_epoch_end(record)
        if state.finished:
            log.info("member seed %d finished (%s): best val accuracy %.4f at epoch %d",
                     self.cfg.seed, state.stop_reason, state.best_val_accuracy, state.best_epoch)

    def _save_checkpoint(self) -> None:
        """Save; wait for the disk only when training is about to end (finished or stopping)."""
        status = "finished" if self.state.finished else ("interrupted" if self.stop_requested else "running")
        progress = self._progress_record(status)  # as of this save, not of when the commit ends

        def committed(folder) -> None:
            persist.write_json_atomically(self.cfg.out_dir / persist.PROGRESS_FILE, progress)
            log.debug("saved %s", folder)

        persist.save_checkpoint(self.store, self.model, self.optimizer, self.schedule, self.state, committed)
        self.policy.saved(self.state.global_step)
        if self.state.finished or self.stop_requested:
            self.store.wait()
        if self.state.finished:
            persist.write_json_atomically(self.cfg.out_dir / persist.RESULT_FILE, asdict(_outcome(self.state, "finished")))

    def _progress_record(self, status: str) -> dict[str, Any]:
        s = self.state
        return {"status": status, "seed": s.seed, "epoch": s.epoch, "batches_done": s.batches_done,
                "batches_per_epoch": self.batches_per_epoch, "global_step": s.global_step,
                "max_epochs": self.cfg.trainer.max_epochs, "best_val_accuracy": s.best_val_accuracy,
                "best_epoch": s.best_epoch, "restarts": s.restarts, "stop_reason": s.stop_reason,
                "host": socket.gethostname(), "pid": os.getpid(), "updated": time.time()}

    def _best_meta(self, record: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
        return {"epoch": record["epoch"], "val_metrics": metrics, "seed": self.cfg.seed,
                "config_hash": self.cfg.config_hash, "model": self.cfg.model_spec,
                "data": {"feature_dim": self.data.info.feature_dim, "class_names": list(self.data.info.class_names)},
                "config": self.cfg.resolved}

    def _progress(self, loader):
        show = self.cfg.trainer.progress == "bar" or (self.cfg.trainer.progress == "auto" and sys.stderr.isatty())
        return tqdm(loader, total=len(self.data.batches), disable=not show, leave=False,
                    desc=f"epoch {self.state.epoch + 1}", initial=0)

    def _interrupted(self) -> MemberOutcome:
        # A signal that lands after an epoch's save finds that save already made, as "running".
        self.store.wait()
        persist.write_json_atomically(self.cfg.out_dir / persist.PROGRESS_FILE, self._progress_record("interrupted"))
        log.warning("member seed %d stopped at epoch %d batch %d/%d; checkpoint saved, will resume from it",
                    self.cfg.seed, self.state.epoch + 1, self.state.batches_done, self.batches_per_epoch)
        return _outcome(self.state, "interrupted", self.stop.received if self.stop else None)


def _history_record(state: TrainingState, metrics: dict[str, Any], val_loss: float, lr: float,
                    batches_per_epoch: int) -> dict[str, Any]:
    return {
        "epoch": state.epoch + 1,
        "train_loss": state.loss_sum / batches_per_epoch,
        "val_loss": val_loss,
        "val_accuracy": metrics["accuracy"],
        "val_f1_weighted": metrics["f1_weighted"],
        "val_f1_macro": metrics["f1_macro"],
        "val_balanced_accuracy": metrics["balanced_accuracy"],
        "val_f1_per_class": {name: v["f1"] for name, v in metrics["per_class"].items()},
        "lr": lr,
        "seconds": state.epoch_seconds,
    }


def _restore_or_start(cfg: MemberConfig, store: CheckpointStore, model, optimizer, schedule) -> TrainingState:
    if cfg.checkpoint.resume == "never":
        if store.step_folders():
            raise CheckpointError(f"{store.root}: holds checkpoints and checkpoint.resume=never; "
                                  "use another --out_dir rather than overwrite them")
        return TrainingState(seed=cfg.seed, config_hash=cfg.config_hash)
    checkpoint = store.load_latest()
    if checkpoint is None:
        return TrainingState(seed=cfg.seed, config_hash=cfg.config_hash)
    folder = checkpoint.path
    state = persist.restore_checkpoint(checkpoint, model, optimizer, schedule)
    persist.check_resumable(state, cfg.seed, cfg.config_hash, cfg.checkpoint.force, folder)
    if state.finished and state.stop_reason == "max_epochs" and state.epoch < cfg.trainer.max_epochs:
        state.finished, state.stop_reason = False, ""  # max_epochs was raised: keep training
    if not state.finished:
        state.restarts += 1
        log.info("resuming seed %d from %s: epoch %d, batch %d (restart %d)",
                 cfg.seed, folder.name, state.epoch + 1, state.batches_done, state.restarts)
    return state


def _start_gpu_memory_afresh(device: torch.device) -> None:
    """Hand back what an earlier member in this process left cached, and count this one's peak alone.

    Releasing at the end is not enough: when a member ends by an exception (a
    pruned sweep trial), the traceback still holds its tensors at that point.
    """
    release_cached_gpu_memory()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _outcome(state: TrainingState, status: Literal["finished", "interrupted"], signum: int | None = None) -> MemberOutcome:
    return MemberOutcome(status, state.epoch, state.best_val_accuracy, state.best_epoch, state.stop_reason, signum)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
