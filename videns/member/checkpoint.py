"""What a member's checkpoint and best model hold, and how they are written and read back."""

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from videns.checkpoint.background import CommitQueue
from videns.checkpoint.codec import (
    OPT_STATE_PREFIX,
    optimizer_from_parts,
    optimizer_to_parts,
    rng_from_parts,
    rng_to_parts,
)
from videns.checkpoint.store import (
    MODEL_FILE,
    OPTIMIZER_FILE,
    STATE_FILE,
    CheckpointFiles,
    CheckpointStore,
    point_link,
    read_verified,
    write_folder_atomically,
)
from videns.errors import CheckpointError
from videns.folders import MemberFolder
from videns.training.optim import LRSchedule
from videns.training.state import TrainingState

log = logging.getLogger(__name__)

STATE_KEY_TRAINING = "training"
STATE_KEY_OPTIMIZER = "optimizer"
STATE_KEY_RNG = "rng"
STATE_KEY_SCHEDULE = "schedule"


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights and buffers, live (not copied): the commit queue snapshots them."""
    return {k: v.detach() for k, v in model.state_dict().items()}


def save_checkpoint(
    store: CheckpointStore,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: LRSchedule,
    state: TrainingState,
    after_commit: Callable[[Path], None] | None = None,
) -> Path:
    """Everything needed to continue bit-identically, as safetensors + JSON.

    Returns the folder the checkpoint goes to; with a background commit queue it
    is on disk only after ``store.wait()`` (or when ``after_commit`` runs).
    """
    opt_tensors, opt_meta = optimizer_to_parts(optimizer)
    rng_tensors, rng_meta = rng_to_parts()
    state_json = {
        STATE_KEY_TRAINING: state.to_json(),
        STATE_KEY_OPTIMIZER: opt_meta,
        STATE_KEY_RNG: rng_meta,
        STATE_KEY_SCHEDULE: schedule.state_dict(),
    }
    return store.save(
        state.global_step,
        {
            MODEL_FILE: model_tensors(model),
            OPTIMIZER_FILE: {**opt_tensors, **rng_tensors},
            STATE_FILE: json.dumps(state_json).encode(),
        },
        after_commit,
    )


def restore_checkpoint(
    checkpoint: CheckpointFiles, model: nn.Module, optimizer: torch.optim.Optimizer, schedule: LRSchedule
) -> TrainingState:
    """Load a checkpoint (verified: :func:`read_verified`) into the live objects; return the training state."""
    state_json = json.loads(checkpoint.read_bytes(STATE_FILE))
    model.load_state_dict(checkpoint.load_tensors(MODEL_FILE))
    tensors = checkpoint.load_tensors(OPTIMIZER_FILE)
    # The optimizer keeps the state tensors it is given. Copied off the file's memory
    # map, they do not hold the file open for the whole run (deleted, it would still
    # take disk space; on NFS its folder could not be removed).
    optimizer_from_parts(
        optimizer,
        {k: v.clone() for k, v in tensors.items() if k.startswith(OPT_STATE_PREFIX + ".")},
        state_json[STATE_KEY_OPTIMIZER],
    )
    schedule.load_state_dict(state_json[STATE_KEY_SCHEDULE])
    rng_from_parts({k: v for k, v in tensors.items() if k.startswith("rng.")}, state_json[STATE_KEY_RNG])
    return TrainingState.from_json(state_json[STATE_KEY_TRAINING])


def check_resumable(saved: TrainingState, seed: int, config_hash: str, force: bool, folder: Path) -> None:
    if saved.seed != seed:
        raise CheckpointError(f"{folder}: checkpoint belongs to seed {saved.seed}, not {seed}; use another --out_dir")
    if saved.config_hash != config_hash and not force:
        raise CheckpointError(
            f"{folder}: checkpoint was written under config hash {saved.config_hash}, the current config hashes "
            f"to {config_hash}; use another --out_dir, or --checkpoint.force true to resume anyway"
        )


def save_best(folder: MemberFolder, model: nn.Module, meta: dict[str, Any], commits: CommitQueue | None = None) -> Path:
    """Write the best model beside the previous one, then switch the ``best`` link to it.

    Through ``commits`` (default: written before returning) like a checkpoint.
    """
    version = folder.best_version(meta["epoch"])
    files = {MODEL_FILE: model_tensors(model), MemberFolder.BEST_META: json.dumps(meta, indent=1).encode()}
    (commits or CommitQueue(background=False)).commit(
        "best", files, lambda snapshot: _commit_best(folder, version, snapshot)
    )
    return version


def _commit_best(folder: MemberFolder, version: Path, files: dict[str, Any]) -> None:
    write_folder_atomically(version, files)
    point_link(folder.best, version.name)
    for old in folder.best_versions():
        if old.name != version.name:
            shutil.rmtree(old, ignore_errors=True)


class BestModel(NamedTuple):
    """A member's best model as read back, verified."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]  # epoch, metrics, model spec, data facts
    weights_sha256: str  # of the model file: tells these weights from any later best


def load_best(folder: MemberFolder) -> BestModel:
    """The best model's tensors, metadata and weights' hash, verified."""
    if not folder.best.exists():
        raise CheckpointError(f"{folder.root}: no best model yet ({folder.best.name}/ missing)")
    best = read_verified(folder.best.resolve())
    return BestModel(
        best.load_tensors(MODEL_FILE), json.loads(best.read_bytes(MemberFolder.BEST_META)), best.sha256(MODEL_FILE)
    )
