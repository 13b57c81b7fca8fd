"""Prototypes of proposed library changes, measured beside the code they would replace.

Each reads exactly the format the library writes (the same files, the same
manifest), so the measurement compares like with like. Delete a prototype once
its change is in the library; the bench then measures the library itself. (The
streamed, background checkpoint writer started here and is now
``videns.checkpoint.tensorfile`` and ``videns.checkpoint.background``.)

``mmap_verified_load``: what ``store.read_verified`` + ``persist.restore_checkpoint``
would do with sha256 over a memory map and ``safetensors`` ``load_file``
(memory-mapped) instead of ``read_bytes`` and ``load(bytes)``.
"""

import hashlib
import json
import mmap
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from safetensors.torch import load_file

from videns.checkpoint.codec import OPT_STATE_PREFIX, optimizer_from_parts, rng_from_parts
from videns.checkpoint.store import MANIFEST_FILE, MODEL_FILE, OPTIMIZER_FILE, STATE_FILE
from videns.training import persist
from videns.training.optim import LRSchedule
from videns.training.state import TrainingState


def mmap_verified_load(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                       schedule: LRSchedule) -> TrainingState:
    """Verify every file against the manifest through a memory map, then load memory-mapped tensors."""
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST_FILE).read_bytes())
    with ThreadPoolExecutor(max_workers=2) as pool:
        digests = {name: pool.submit(_digest, folder / name) for name in manifest["files"]}
        for name, entry in manifest["files"].items():
            if digests[name].result() != {"size": entry["size"], "sha256": entry["sha256"]}:
                raise ValueError(f"{folder / name}: does not match the manifest")
    state_json = json.loads((folder / STATE_FILE).read_bytes())
    model.load_state_dict(load_file(folder / MODEL_FILE))
    tensors = load_file(folder / OPTIMIZER_FILE)
    optimizer_from_parts(optimizer, {k: v for k, v in tensors.items() if k.startswith(OPT_STATE_PREFIX + ".")},
                         state_json[persist.STATE_KEY_OPTIMIZER])
    schedule.load_state_dict(state_json[persist.STATE_KEY_SCHEDULE])
    rng_from_parts({k: v for k, v in tensors.items() if k.startswith("rng.")}, state_json[persist.STATE_KEY_RNG])
    return TrainingState.from_json(state_json[persist.STATE_KEY_TRAINING])


def _digest(path: Path) -> dict:
    size = os.path.getsize(path)
    digest = hashlib.sha256()
    if size:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
            digest.update(view)  # releases the GIL for large buffers
    return {"size": size, "sha256": digest.hexdigest()}

