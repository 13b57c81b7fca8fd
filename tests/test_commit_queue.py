"""Streamed safetensors files and background commits: same bytes, values as of the save, errors surface."""

import hashlib
import threading

import pytest
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from videns.checkpoint.background import CommitQueue
from videns.checkpoint.store import CheckpointStore
from videns.checkpoint.tensorfile import write_tensor_file


def _mixed_tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "lstm.weight": torch.randn(7, 5, generator=gen),
        "a.scalar": torch.tensor(3.5, dtype=torch.float64),
        "b.half": torch.randn(3, generator=gen).to(torch.bfloat16),
        "fp16": torch.randn(2, 2, generator=gen).half(),
        "steps": torch.arange(5, dtype=torch.int64),
        "count32": torch.arange(3, dtype=torch.int32),
        "mask": torch.tensor([True, False, True]),
        "rng": torch.randint(0, 255, (13,), dtype=torch.uint8, generator=gen),
        "empty": torch.zeros(0, 4),
    }


def test_streamed_file_is_byte_identical_to_safetensors_and_hash_is_of_the_file(tmp_path):
    tensors = _mixed_tensors()
    written = write_tensor_file(tmp_path / "t.safetensors", tensors)
    data = (tmp_path / "t.safetensors").read_bytes()
    assert data == save_tensors(tensors)
    assert (written.size, written.sha256) == (len(data), hashlib.sha256(data).hexdigest())


def test_background_commit_writes_values_as_of_the_save_not_of_the_write(tmp_path):
    weights = torch.full((1000,), 7.0)
    store = CheckpointStore(tmp_path / "ckpt", keep=5, commits=CommitQueue(background=True))
    release = threading.Event()
    store.commits.commit("hold", {}, lambda _: release.wait(10))  # keeps the commit thread busy
    store.save(1, {"model.safetensors": {"w": weights}})
    weights.fill_(-1.0)  # training goes on and changes the weights before the commit runs
    assert not store.step_folders()
    release.set()
    store.wait()
    folder = store.step_folders()[0]
    assert folder.name == "step-000000001"
    assert (load_tensors((folder / "model.safetensors").read_bytes())["w"] == 7.0).all()


def test_commits_land_in_the_order_they_were_made(tmp_path):
    store = CheckpointStore(tmp_path / "ckpt", keep=2, commits=CommitQueue(background=True))
    order = []
    for step in range(1, 6):
        store.save(step, {"state.json": b"{}"}, after_commit=lambda folder: order.append(folder.name))
    store.wait()
    assert order == [f"step-{s:09d}" for s in range(1, 6)]
    assert (store.root / "latest").resolve().name == "step-000000005"
    assert [p.name for p in store.step_folders()] == ["step-000000005", "step-000000004"]


def test_a_failed_background_commit_is_raised_in_the_caller(tmp_path):
    queue = CommitQueue(background=True)
    queue.commit("x", {}, lambda _: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(OSError, match="No space left"):
        queue.wait()
    queue.commit("x", {}, lambda _: None)  # the error was reported once; the queue keeps working
    queue.close()


def test_buffers_are_reused_across_saves(tmp_path):
    queue = CommitQueue(background=True)
    seen = []
    for value in (1.0, 2.0):
        queue.commit("checkpoint", {"m": {"w": torch.full((4,), value)}}, lambda snap: seen.append(snap["m"]["w"]))
    queue.close()
    assert seen[0].data_ptr() == seen[1].data_ptr()
    assert seen[1].tolist() == [2.0] * 4
