"""The epoch and step loop of one member: when to validate, save and stop."""

import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from tqdm import tqdm

from videns.checkpoint.policy import SavePolicy
from videns.checkpoint.store import CheckpointStore
from videns.config import MemberConfig
from videns.folders import MemberFolder
from videns.io import write_json_atomically, write_text_if_changed, writing_into
from videns.logs import shows_progress_bar
from videns.member.checkpoint import save_best, save_checkpoint
from videns.member.data import MemberData, alpha_tensor
from videns.member.ledger import StepMark, stop_cause
from videns.metrics import classification_metrics
from videns.tensorboard import EpochScalars
from videns.training.evaluate import predict_probs
from videns.training.interrupt import StopSignals
from videns.training.loss import FocalLoss
from videns.training.optim import LRSchedule
from videns.training.state import TrainingState
from videns.training.step import train_step

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
    config_hash: str = ""  # what it was trained under: a launch under another config is not done by this


EpochHook = Callable[[dict[str, Any]], None]


class MemberLoop:
    """The epoch/step loop of one member; owns when to validate, save and stop."""

    def __init__(
        self,
        cfg: MemberConfig,
        data: MemberData,
        model,
        optimizer,
        schedule: LRSchedule,
        store: CheckpointStore,
        state: TrainingState,
        device: torch.device,
        stop: StopSignals | None,
        context: Mapping[str, Any] | None = None,
    ):
        self.cfg, self.data, self.model, self.optimizer = cfg, data, model, optimizer
        self.schedule, self.store, self.state, self.device = schedule, store, state, device
        self.stop = stop
        self.folder = MemberFolder(cfg.out_dir)
        self.context = dict(context or {})
        self.mark = StepMark(self.folder.reached_step)
        self.on_epoch_end: EpochHook | None = None
        self.scalars: EpochScalars | None = None
        self.policy = SavePolicy(cfg.checkpoint)
        self.policy.saved(state.global_step)
        alpha = alpha_tensor(data.class_weights, device) if cfg.loss.class_alpha else None
        self.criterion = FocalLoss(alpha, cfg.loss.gamma, cfg.loss.smoothing).to(device)
        self.autocast_dtype = torch.bfloat16 if cfg.trainer.precision == "bf16" else None
        self.batches_per_epoch = data.batches.batches_per_epoch()

    @property
    def stop_requested(self) -> bool:
        return self.stop is not None and self.stop.requested

    def run(self) -> MemberOutcome:
        try:
            while not self.state.finished:
                if not self._train_epoch():
                    return self._interrupted()
                self._end_epoch()
                if self.stop_requested and not self.state.finished:
                    return self._interrupted()
            return outcome_of(self.state, "finished")
        finally:
            self.mark.close()

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
            self.mark.reached(state.global_step)
            if state.batches_done < self.batches_per_epoch and (
                self.stop_requested or self.policy.due(state.global_step)
            ):
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
        return train_step(
            self.model,
            self.optimizer,
            self.criterion,
            on_device,
            autocast_dtype=self.autocast_dtype,
            grad_clip=self.cfg.optimizer.grad_clip,
        )

    def _end_epoch(self) -> None:
        state, trainer = self.state, self.cfg.trainer
        if self.cfg.data.num_workers:
            self.store.wait()  # validation forks workers: not while the commit thread is writing
        probs, labels, val_loss = predict_probs(
            self.model, self.data.val_loader, self.device, self.autocast_dtype, self.criterion
        )
        metrics = classification_metrics(labels, probs, self.data.info.class_names)
        record = _history_record(state, metrics, val_loss, self.schedule.current_lr(), self.batches_per_epoch)
        self.schedule.after_epoch(metrics["accuracy"])
        if metrics["accuracy"] > state.best_val_accuracy:
            state.best_val_accuracy, state.best_epoch, state.bad_epochs = metrics["accuracy"], record["epoch"], 0
            save_best(self.folder, self.model, self._best_meta(record, metrics), self.store.commits)
        else:
            state.bad_epochs += 1
        if self.scalars is not None:  # on disk before the checkpoint that covers them
            with writing_into(self.folder.tensorboard, "the epoch's scalars"):
                self.scalars.write(record, state.global_step)
        state.history.append(record)
        state.epoch, state.batches_done, state.loss_sum, state.epoch_seconds = state.epoch + 1, 0, 0.0, 0.0
        if trainer.patience and state.bad_epochs >= trainer.patience:
            state.finished, state.stop_reason = True, "early_stop"
        elif state.epoch >= trainer.max_epochs:
            state.finished, state.stop_reason = True, "max_epochs"
        self._save_checkpoint()
        write_history(self.folder, state.history)
        log.info(
            "epoch %d/%d train_loss %.4f val_loss %.4f val_acc %.4f val_f1w %.4f lr %.2e %.1fs%s",
            record["epoch"],
            trainer.max_epochs,
            record["train_loss"],
            val_loss,
            metrics["accuracy"],
            metrics["f1_weighted"],
            record["lr"],
            record["seconds"],
            " (best)" if state.best_epoch == record["epoch"] else "",
        )
        if self.on_epoch_end is not None:
            # The commit goes on meanwhile, as it does under the next epoch's steps. A hook that raises (a
            # pruned sweep trial) still leaves the epoch on disk: train_member closes the queue before it returns.
            self.on_epoch_end(record)
        if state.finished:
            log.info(
                "member seed %d finished (%s): best val accuracy %.4f at epoch %d",
                self.cfg.seed,
                state.stop_reason,
                state.best_val_accuracy,
                state.best_epoch,
            )

    def _save_checkpoint(self) -> None:
        """Save; wait for the disk only when training is about to end (finished or stopping)."""
        status = "finished" if self.state.finished else ("interrupted" if self.stop_requested else "running")
        progress = self._progress_record(status)  # as of this save, not of when the commit ends

        def committed(folder) -> None:
            write_json_atomically(self.folder.progress_file, progress)
            log.debug("saved %s", folder)

        save_checkpoint(self.store, self.model, self.optimizer, self.schedule, self.state, committed)
        self.policy.saved(self.state.global_step)
        if self.state.finished or self.stop_requested:
            self.store.wait()
        if self.state.finished:
            write_json_atomically(self.folder.result_file, asdict(outcome_of(self.state, "finished")))

    def record_progress(self, status: str) -> None:
        """Rewrite progress.json now, as of the state in memory (saves rewrite it as of what they commit)."""
        write_json_atomically(self.folder.progress_file, self._progress_record(status))

    def _progress_record(self, status: str) -> dict[str, Any]:
        s = self.state
        return {
            "status": status,
            "seed": s.seed,
            "epoch": s.epoch,
            "batches_done": s.batches_done,
            "batches_per_epoch": self.batches_per_epoch,
            "global_step": s.global_step,
            "max_epochs": self.cfg.trainer.max_epochs,
            "best_val_accuracy": s.best_val_accuracy,
            "best_epoch": s.best_epoch,
            "restarts": s.restarts,
            "stop_reason": s.stop_reason,
            "job_id": self.context.get("job_id"),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "updated": time.time(),
        }

    def _best_meta(self, record: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
        return {
            "epoch": record["epoch"],
            "val_metrics": metrics,
            "seed": self.cfg.seed,
            "config_hash": self.cfg.config_hash,
            "model": self.cfg.model_spec,
            "data": {"feature_dim": self.data.info.feature_dim, "class_names": list(self.data.info.class_names)},
            "config": self.cfg.resolved,
        }

    def _progress(self, loader):
        return tqdm(
            loader,
            total=len(self.data.batches),
            disable=not shows_progress_bar(self.cfg.trainer.progress),
            leave=False,
            desc=f"epoch {self.state.epoch + 1}",
            initial=0,
        )

    def _interrupted(self) -> MemberOutcome:
        # A signal that lands after an epoch's save finds that save already made, as "running".
        self.store.wait()
        signum = self.stop.received if self.stop else None
        record = self._progress_record("interrupted")
        record.update(
            signal=signal.Signals(signum).name if signum else None,
            stop_cause=stop_cause(signum, self.context, record["updated"]),
        )
        write_json_atomically(self.folder.progress_file, record)
        log.warning(
            "member seed %d stopped at epoch %d batch %d/%d; checkpoint saved, will resume from it",
            self.cfg.seed,
            self.state.epoch + 1,
            self.state.batches_done,
            self.batches_per_epoch,
        )
        return outcome_of(self.state, "interrupted", self.stop.received if self.stop else None)


def _history_record(
    state: TrainingState, metrics: dict[str, Any], val_loss: float, lr: float, batches_per_epoch: int
) -> dict[str, Any]:
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


def outcome_of(
    state: TrainingState, status: Literal["finished", "interrupted"], signum: int | None = None
) -> MemberOutcome:
    return MemberOutcome(
        status, state.epoch, state.best_val_accuracy, state.best_epoch, state.stop_reason, signum, state.config_hash
    )


def write_history(folder: MemberFolder, history: list[dict[str, Any]]) -> None:
    """Rewrite history.jsonl from the checkpointed history, so a resume never duplicates lines."""
    write_text_if_changed(folder.history, "".join(json.dumps(line) + "\n" for line in history))
