"""Safetensors files written straight from tensor memory, hashed on the way out.

``safetensors.torch.save`` builds the whole file as one ``bytes`` object, and
hashing or writing it afterwards reads it again: for a full-size member with
AdamW state that is two extra passes over ~800 MB. Here the header is built
from the tensors' shapes and each tensor's memory goes to the file as a view,
with the sha256 of each chunk computed in a thread while the next chunk is
written (both release the GIL). The bytes are identical to
``safetensors.torch.save``, which a test checks, so any safetensors reader
loads them.
"""

import hashlib
import json
import os
import struct
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

_DTYPE_NAMES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
# safetensors lays tensors out by its Dtype enum, last variant first, then by name.
_DTYPE_ORDER = ["BOOL", "U8", "I8", "I16", "F16", "BF16", "I32", "F32", "F64", "I64"]


@dataclass(frozen=True)
class WrittenFile:
    """Size and sha256 of a file as written: its manifest entry."""

    size: int
    sha256: str

    def manifest_entry(self) -> dict[str, int | str]:
        return {"size": self.size, "sha256": self.sha256}


def write_tensor_file(path: Path, tensors: Mapping[str, torch.Tensor]) -> WrittenFile:
    """Write CPU ``tensors`` as a safetensors file, fsynced; return its size and sha256."""
    names, header_bytes = _layout(path, tensors)
    bodies = (_raw_view(tensors[name]) for name in names if tensors[name].numel())
    return write_chunks(path, [struct.pack("<Q", len(header_bytes)), header_bytes, *bodies])


def tensor_file_size(tensors: Mapping[str, torch.Tensor]) -> int:
    """The size of the file :func:`write_tensor_file` writes for ``tensors``, without writing it."""
    _, header_bytes = _layout(Path("(size)"), tensors)
    return 8 + len(header_bytes) + sum(t.numel() * t.element_size() for t in tensors.values())


def _layout(path: Path, tensors: Mapping[str, torch.Tensor]) -> tuple[list[str], bytes]:
    """The tensors' order in the file, and its JSON header padded to 8 bytes."""
    for name, tensor in tensors.items():
        if tensor.dtype not in _DTYPE_NAMES:
            raise TypeError(f"{path}: tensor {name!r} has dtype {tensor.dtype}, which we do not store")
    names = sorted(tensors, key=lambda k: (-_DTYPE_ORDER.index(_DTYPE_NAMES[tensors[k].dtype]), k))
    header, offset = {}, 0
    for name in names:
        tensor = tensors[name]
        size = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": _DTYPE_NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    return names, header_bytes + b" " * (-len(header_bytes) % 8)


def write_chunks(path: Path, chunks: Iterable[bytes | memoryview]) -> WrittenFile:
    """Write ``chunks`` to a new file and fsync it, hashing chunk i in a thread while chunk i+1 is written."""
    digest, size = hashlib.sha256(), 0
    with open(path, "wb") as f, ThreadPoolExecutor(max_workers=1) as hasher:
        hashing = None
        for chunk in chunks:
            f.write(chunk)
            size += len(chunk)
            if hashing is not None:
                hashing.result()
            hashing = hasher.submit(digest.update, chunk)
        if hashing is not None:
            hashing.result()
        f.flush()
        os.fsync(f.fileno())
    return WrittenFile(size, digest.hexdigest())


def _raw_view(tensor: torch.Tensor) -> memoryview:
    if tensor.device.type != "cpu" or not tensor.is_contiguous():
        raise ValueError("write_tensor_file needs contiguous CPU tensors")
    return memoryview(tensor.reshape(-1).view(torch.uint8).numpy())
