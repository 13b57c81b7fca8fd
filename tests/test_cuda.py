"""What only a GPU can show: no host syncs in a step, CUDA checkpoints, a bf16 member end to end.

Skipped where no CUDA device is visible (CI has none). Run on a GPU node with
``python -m pytest -m cuda``.
"""

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO, run_module
from videns.bench.cuda import _fits_in_slice
from videns.bench.profiles import PROFILES
from videns.bench.training import random_batch
from videns.checkpoint.background import CommitQueue
from videns.checkpoint.store import CheckpointStore
from videns.device import cap_gpu_memory
from videns.models import TemporalAttentionClassifier
from videns.training.loss import FocalLoss
from videns.training.optim import OptimizerConfig, build_optimizer
from videns.training.step import train_step

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _pinned_batch(lengths: list[int], feature_dim: int = 12, num_classes: int = 3):
    """As the DataLoader hands it over: pinned host tensors."""
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(len(lengths), max(lengths), feature_dim, generator=gen)
    labels = torch.randint(0, num_classes, (len(lengths),), generator=gen)
    return features.pin_memory(), torch.tensor(lengths).pin_memory(), labels.pin_memory()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("lengths", [[20, 20, 20, 20], [20, 7, 13, 1]], ids=["equal", "variable"])
def test_a_training_step_never_waits_for_the_gpu(precision, lengths):
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = TemporalAttentionClassifier(12, 3, hidden_dim=32, num_lstm_layers=2, num_attention_heads=4).to(device)
    optimizer = build_optimizer(OptimizerConfig(), model, fused=True)
    criterion = FocalLoss(torch.tensor([0.2, 0.3, 0.5], device=device), 2.0, 0.1).to(device)
    autocast_dtype = torch.bfloat16 if precision == "bf16" else None
    features, host_lengths, labels = _pinned_batch(lengths)

    def step():
        batch = (features.to(device, non_blocking=True), host_lengths, labels.to(device, non_blocking=True))
        return train_step(model, optimizer, criterion, batch, autocast_dtype=autocast_dtype, grad_clip=1.0)

    step()  # the first step creates handles, workspaces and optimizer state
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = [step() for _ in range(3)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(torch.isfinite(loss).item() for loss in losses)


def test_a_background_commit_of_cuda_tensors_keeps_the_values_as_of_the_save(tmp_path):
    store = CheckpointStore(tmp_path / "ckpt", keep=2, commits=CommitQueue(background=True))
    weights = torch.ones(4_000_000, device="cuda")
    try:
        store.save(1, {"model.safetensors": {"w": weights}, "state.json": b"{}"})
        weights.fill_(2.0)  # the next training step, queued right after save() returns
        store.wait()
    finally:
        store.commits.close()
    assert (load_file(store.root / "step-000000001" / "model.safetensors")["w"] == 1.0).all()


def test_the_demo_member_learns_in_bf16_on_the_gpu_and_logs_its_memory(tmp_path):
    """As tests/test_train_member.py's demo run on CPU, with bf16 autocast and fused AdamW."""
    out = tmp_path / "member"
    result = run_module(
        "jobs.train",
        [
            "--config",
            str(REPO / "configs/demo.yaml"),
            "--data.root",
            str(tmp_path / "data"),
            "--data.generate_demo",
            "true",
            "--out_dir",
            str(out),
            "--trainer.progress",
            "off",
            "--trainer.device",
            "cuda",
            "--trainer.precision",
            "bf16",
        ],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((out / "result.json").read_text())["best_val_accuracy"] >= 0.8
    samples = [json.loads(line) for line in (out / "resources.jsonl").read_text().splitlines()]
    assert samples and all(0 < s["device_used_gb"] <= s["device_total_gb"] for s in samples)


def test_a_memory_cap_on_the_bare_cuda_device_keeps_allocations_under_it():
    """Bare "cuda", as --trainer.device cuda gives it: set_per_process_memory_fraction refuses a device
    without an index."""
    total = torch.cuda.get_device_properties(0).total_memory
    try:
        assert cap_gpu_memory(torch.device("cuda"), 1.0) == pytest.approx(1e9 / total)
        with pytest.raises(torch.cuda.OutOfMemoryError):
            torch.empty(int(1.5e9), dtype=torch.uint8, device="cuda")
        assert torch.empty(int(0.5e9), dtype=torch.uint8, device="cuda").numel() == int(0.5e9)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, 0)
        torch.cuda.empty_cache()


def test_the_bench_slice_fit_runs_on_the_bare_cuda_device():
    profile = PROFILES["tiny"]
    fit = _fits_in_slice(
        profile, random_batch(profile.batch_size, profile.max_frames, profile.feature_dim), torch.device("cuda")
    )
    assert fit["fits"] and fit["fp32"]["fits"] and 0 < fit["memory_fraction"] < 1
