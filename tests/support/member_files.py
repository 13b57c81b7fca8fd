"""Reading a member folder's tensors and records back, for comparisons in tests."""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file


def latest_checkpoint(member: Path) -> Path:
    return sorted((member / "checkpoints").glob("step-*"))[-1]


def checkpoint_state(folder: Path) -> dict:
    return json.loads((folder / "state.json").read_text())


def history_without_times(member: Path) -> list[dict]:
    lines = [json.loads(line) for line in (member / "history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k != "seconds"} for line in lines]


def assert_same_tensors(path_a: Path, path_b: Path) -> None:
    a, b = load_file(path_a), load_file(path_b)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{path_a.name}: {key} differs"


def assert_members_identical(a: Path, b: Path) -> None:
    """Final weights, optimizer state, best model and history are bit-identical."""
    last_a, last_b = latest_checkpoint(a), latest_checkpoint(b)
    assert last_a.name == last_b.name
    assert_same_tensors(last_a / "model.safetensors", last_b / "model.safetensors")
    assert_same_tensors(last_a / "optimizer.safetensors", last_b / "optimizer.safetensors")
    assert_same_tensors(a / "best" / "model.safetensors", b / "best" / "model.safetensors")
    assert (
        json.loads((a / "best" / "best.json").read_text())["epoch"]
        == json.loads((b / "best" / "best.json").read_text())["epoch"]
    )
    assert history_without_times(a) == history_without_times(b)
    state_a, state_b = checkpoint_state(last_a), checkpoint_state(last_b)
    assert state_a["optimizer"] == state_b["optimizer"] and state_a["schedule"] == state_b["schedule"]
