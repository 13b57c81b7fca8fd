"""Prototypes of proposed library changes, measured beside the code they would replace.

Each writes or reads exactly the format the library does (the same files, the
same manifest), so the measurement compares like with like. Delete a prototype
once its change is in the library; the bench then measures the library itself.

``streamed_save``: what ``persist.save_checkpoint`` + ``store.write_folder_atomically``
would do if each tensor's memory went straight to the file (a safetensors
header built here, then one write per tensor from a memoryview: byte-identical
to ``safetensors.torch.save``) instead of through two in-memory ``bytes``
copies, with the sha256 computed from the same buffers in a thread while the
next one is written (both release the GIL). ``safetensors`` ``save_file`` was
tried first and was no faster than ``save`` here.

``mmap_verified_load``: what ``store.read_verified`` + ``persist.restore_checkpoint``
would do with sha256 over a memory map and ``safetensors`` ``load_file``
(memory-mapped) instead of ``read_bytes`` and ``load(bytes)``.
"""

import hashlib
import json
import mmap
import os
import struct
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from safetensors.torch import load_file

from videns.checkpoint.codec import OPT_STATE_PREFIX, optimizer_from_parts, optimizer_to_parts, rng_from_parts, \
    rng_to_parts
from videns.checkpoint.store import (LATEST_LINK, MANIFEST_FILE, MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, fsync_dir,
                                     point_link)
from videns.training import persist
from videns.training.optim import LRSchedule
from videns.training.state import TrainingState

_SAFETENSORS_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                       torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
                       torch.uint8: "U8", torch.bool: "BOOL"}


def streamed_save(root: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule: LRSchedule,
                  state: TrainingState) -> Path:
    """A checkpoint folder in the store's format, written without in-memory byte copies."""
    opt_tensors, opt_meta = optimizer_to_parts(optimizer)
    rng_tensors, rng_meta = rng_to_parts()
    state_json = {persist.STATE_KEY_TRAINING: state.to_json(), persist.STATE_KEY_OPTIMIZER: opt_meta,
                  persist.STATE_KEY_RNG: rng_meta, persist.STATE_KEY_SCHEDULE: schedule.state_dict()}
    final = Path(root) / f"step-{state.global_step:09d}"
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    model_tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    manifest = {"files": {
        MODEL_FILE: write_tensor_file(tmp / MODEL_FILE, model_tensors),
        OPTIMIZER_FILE: write_tensor_file(tmp / OPTIMIZER_FILE, {**opt_tensors, **rng_tensors}),
        STATE_FILE: _write_chunks(tmp / STATE_FILE, [json.dumps(state_json).encode()]),
    }}
    _write_chunks(tmp / MANIFEST_FILE, [json.dumps(manifest, indent=1).encode()])
    fsync_dir(tmp)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    point_link(final.parent / LATEST_LINK, final.name)
    return final


def write_tensor_file(path: Path, tensors: dict[str, torch.Tensor]) -> dict:
    """Write ``tensors`` as safetensors, byte-identical to ``safetensors.torch.save``; return size and sha256.

    The header is built here and every tensor's memory goes to the file as a
    view, with no copy; safetensors orders tensors by dtype size (largest
    first), then by name.
    """
    names = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    header, offset = {}, 0
    for name in names:
        t = tensors[name]
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)
    views = [memoryview(tensors[n].reshape(-1).view(torch.uint8).numpy()) for n in names if tensors[n].numel()]
    return _write_chunks(path, [struct.pack("<Q", len(header_bytes)), header_bytes, *views])


def _write_chunks(path: Path, chunks: list) -> dict:
    """Write, hash (chunk i hashed in a thread while chunk i+1 is written) and fsync; size and sha256."""
    digest, size = hashlib.sha256(), 0
    with open(path, "wb") as f, ThreadPoolExecutor(max_workers=1) as pool:
        hashing = None
        for chunk in chunks:
            f.write(chunk)
            size += len(chunk)
            if hashing is not None:
                hashing.result()
            hashing = pool.submit(digest.update, chunk)
        if hashing is not None:
            hashing.result()
        f.flush()
        os.fsync(f.fileno())
    return {"size": size, "sha256": digest.hexdigest()}


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

