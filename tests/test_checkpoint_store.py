"""The checkpoint store: atomic commits that survive SIGKILL, verified loads, optimizer state as saved."""

import json
import os
import random
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from videns.checkpoint.codec import optimizer_from_parts, optimizer_to_parts
from videns.checkpoint.store import CheckpointStore, CorruptCheckpoint, read_verified

# Saves checkpoints in a loop, each filled with its step number, continuing after the newest valid one.
# The tensor is overwritten with the next step as soon as save() returns, as training would: a background
# commit must write the values as of the save, not what the tensor holds when the commit gets to it.
WRITER = """
import sys
import torch
from videns.checkpoint.background import CommitQueue
from videns.checkpoint.store import CheckpointStore
store = CheckpointStore(sys.argv[1], keep=2, commits=CommitQueue(background=sys.argv[2] == "background"))
found = store.load_latest()
step = int(found.path.name.split("-")[1]) + 1 if found else 1
weights = torch.full((1_000_000,), float(step))
print("ready", flush=True)
while True:
    store.save(step, {"model.safetensors": {"w": weights}, "state.json": b'{"step": %d}' % step})
    step += 1
    weights.fill_(float(step))
"""


def _payload(step: int) -> dict[str, bytes]:
    from safetensors.numpy import save

    return {"model.safetensors": save({"w": np.full(1000, step, np.float32)}), "state.json": b'{"step": %d}' % step}


def test_keeps_newest_k_and_points_latest_at_the_newest(tmp_path):
    store = CheckpointStore(tmp_path / "ckpt", keep=2)
    for step in (1, 2, 3):
        store.save(step, _payload(step))
    assert [p.name for p in store.step_folders()] == ["step-000000003", "step-000000002"]
    assert (store.root / "latest").resolve().name == "step-000000003"
    found = store.load_latest()
    assert found.path.name == "step-000000003" and found.load_tensors("model.safetensors")["w"][0] == 3


def test_truncated_newest_is_detected_and_previous_used(tmp_path, caplog):
    store = CheckpointStore(tmp_path / "ckpt", keep=3)
    for step in (1, 2):
        store.save(step, _payload(step))
    newest = store.root / "step-000000002" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:10])
    with pytest.raises(CorruptCheckpoint, match="truncated"):
        read_verified(newest.parent)
    assert store.load_latest().path.name == "step-000000001"
    assert "skipping checkpoint step-000000002" in caplog.text


def test_changing_loaded_tensors_never_touches_the_file(tmp_path):
    store = CheckpointStore(tmp_path / "ckpt", keep=2)
    store.save(1, _payload(1))
    weights = store.load_latest().load_tensors("model.safetensors")["w"]
    weights.add_(1.0)  # as an optimizer updates its loaded state in place
    assert (weights == 2).all()
    assert (read_verified(store.root / "step-000000001").load_tensors("model.safetensors")["w"] == 1).all()


def test_a_file_replaced_after_verification_is_refused(tmp_path):
    store = CheckpointStore(tmp_path / "ckpt", keep=2)
    store.save(1, _payload(1))
    store.save(2, _payload(2))
    verified = read_verified(store.root / "step-000000001")
    replacement = store.root / "step-000000001" / "model.safetensors.new"
    replacement.write_bytes(_payload(7)["model.safetensors"])
    replacement.replace(store.root / "step-000000001" / "model.safetensors")
    with pytest.raises(CorruptCheckpoint, match="replaced or changed after it was verified"):
        verified.load_tensors("model.safetensors")


def test_a_restored_optimizer_keeps_its_own_kernels_and_continues_as_the_saved_one():
    def adamw(**kernels):
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(5))]
        return params, torch.optim.AdamW(params, lr=0.01, **kernels)

    def step(params, optimizer, value):
        params[0].grad = torch.full((5,), value)
        optimizer.step()

    saved_params, saved = adamw(foreach=False)  # as built before the fused kernel was used on CPU
    step(saved_params, saved, 1.0)
    tensors, meta = optimizer_to_parts(saved)
    params, resumed = adamw(fused=True)  # as built now, on CPU or GPU
    params[0].data.copy_(saved_params[0].data)
    optimizer_from_parts(resumed, load_tensors(save_tensors(tensors)), json.loads(json.dumps(meta)))  # as from disk
    assert resumed.param_groups[0]["fused"] is True and resumed.param_groups[0]["foreach"] is None
    step(saved_params, saved, -0.5)
    step(params, resumed, -0.5)
    assert torch.allclose(params[0], saved_params[0], atol=1e-7)


def test_a_file_not_in_the_manifest_is_refused(tmp_path):
    store = CheckpointStore(tmp_path / "ckpt", keep=2)
    store.save(1, _payload(1))
    (store.root / "step-000000001" / "extra.safetensors").write_bytes(_payload(9)["model.safetensors"])
    with pytest.raises(CorruptCheckpoint, match="extra.safetensors is not in manifest.json"):
        store.load_latest().load_tensors("extra.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["background", "inline"])
def test_sigkill_at_random_moments_while_writing_never_leaves_a_broken_latest(tmp_path, mode):
    root = tmp_path / "ckpt"
    rng = random.Random(7)
    last_step = 0
    for _ in range(25):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root), mode], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.25))
        proc.kill()
        proc.wait()
        found = CheckpointStore(root, keep=2).load_latest()
        if found is None:
            continue
        step = int(found.path.name.split("-")[1])
        assert step >= last_step
        assert (found.load_tensors("model.safetensors")["w"] == step).all()
        assert found.read_bytes("state.json") == b'{"step": %d}' % step
        last_step = step
    assert last_step > 5


def test_a_checkpoint_moved_aside_by_an_unfinished_re_save_is_put_back_not_purged(tmp_path):
    """A kill between the two renames of a re-save of one step leaves that step's only copy under a .tmp- name."""
    store = CheckpointStore(tmp_path / "ckpt", keep=2)
    store.save(18, {"model.safetensors": {"w": torch.ones(3)}, "state.json": b"{}"})
    committed = store.root / "step-000000018"
    os.replace(committed, store.root / ".tmp-old-step-000000018-0123abcd")  # as _move_into_place's first rename
    store.purge()
    assert (committed / "state.json").read_bytes() == b"{}"
    assert store.load_latest() is not None and not list(store.root.glob(".tmp-*"))
