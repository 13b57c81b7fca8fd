"""One member trains end to end, reproducibly, with the outputs and progress people need."""

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest
import yaml

from jobs.train import main as train_main
from tests.conftest import REPO, run_module, tiny_member_args
from tests.support.member_files import assert_members_identical

HISTORY_KEYS = {
    "epoch",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "val_f1_weighted",
    "val_f1_macro",
    "val_f1_per_class",
    "lr",
    "seconds",
}


def test_same_seed_gives_identical_members(demo_root, tmp_path):
    for name in ("a", "b"):
        assert train_main(tiny_member_args(demo_root, tmp_path / name)) == 0
    assert_members_identical(tmp_path / "a", tmp_path / "b")


def test_outputs_history_best_and_log_lines(demo_root, tmp_path):
    out = tmp_path / "m"
    assert train_main(tiny_member_args(demo_root, out)) == 0
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert all(HISTORY_KEYS <= set(h) for h in history)
    best = json.loads((out / "best" / "best.json").read_text())
    best_history = max(history, key=lambda h: h["val_accuracy"])
    assert best["epoch"] == best_history["epoch"]
    assert best["val_metrics"]["accuracy"] == best_history["val_accuracy"]
    assert best["model"]["class_path"] == "videns.models.TemporalAttentionClassifier"
    assert best["data"] == {
        "feature_dim": 16,
        "class_names": ["Animation", "Flat_Content", "Gaming", "Natural_Content"],
    }
    assert (out / "best" / "model.safetensors").is_file()
    log = (out / "train.log").read_text()
    assert sum("epoch " in line and "val_acc" in line for line in log.splitlines()) == 3
    assert "on cpu, precision fp32, AdamW (fused)" in log  # one kernel for every parameter, on CPU too


def test_finished_member_returns_at_once_with_its_result(demo_root, tmp_path):
    out = tmp_path / "m"
    assert train_main(tiny_member_args(demo_root, out)) == 0
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    result = run_module("jobs.train", tiny_member_args(demo_root, out))
    assert result.returncode == 0 and "best val accuracy" in result.stdout
    assert "already finished" in result.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before


def test_demo_config_learns_well_above_chance(tmp_path):
    out = tmp_path / "demo_member"
    data = tmp_path / "data"
    assert (
        train_main(
            [
                "--config",
                str(REPO / "configs/demo.yaml"),
                "--data.root",
                str(data),
                "--data.generate_demo",
                "true",
                "--out_dir",
                str(out),
                "--trainer.progress",
                "off",
            ]
        )
        == 0
    )
    result = json.loads((out / "result.json").read_text())
    assert result["best_val_accuracy"] >= 0.8  # chance is about 0.4 (majority class)


def test_print_config_round_trips_into_a_run(demo_root, tmp_path):
    printed = run_module("jobs.train", ["--config", str(REPO / "configs/demo.yaml"), "--print_config"])
    assert printed.returncode == 0
    cfg = yaml.safe_load(printed.stdout)
    assert cfg["model"]["init_args"]["hidden_dim"] == 32 and cfg["trainer"]["max_epochs"] == 12
    config_file = tmp_path / "my.yaml"
    config_file.write_text(printed.stdout)
    out = tmp_path / "m"
    assert (
        train_main(
            [
                "--config",
                str(config_file),
                "--data.root",
                str(demo_root),
                "--out_dir",
                str(out),
                "--trainer.max_epochs",
                "1",
            ]
        )
        == 0
    )
    assert (out / "best" / "model.safetensors").is_file()


@pytest.mark.slow  # two members trained in subprocesses: 16-80 s on a shared 2-core machine
def test_progress_bar_only_on_a_terminal(demo_root, tmp_path):
    args = tiny_member_args(demo_root, tmp_path / "tty", "--trainer.max_epochs", "1", "--trainer.progress", "auto")
    primary, secondary = pty.openpty()
    # A fresh pty reports 0 columns, and tqdm draws nothing that narrow.
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.train", *args], cwd=REPO, stdin=secondary, stdout=secondary, stderr=secondary
    )
    os.close(secondary)
    output = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    assert proc.wait(timeout=120) == 0
    assert b"epoch 1:" in output and (b"it/s" in output or b"s/it" in output)
    piped = run_module(
        "jobs.train",
        tiny_member_args(demo_root, tmp_path / "pipe", "--trainer.max_epochs", "1", "--trainer.progress", "auto"),
    )
    assert piped.returncode == 0 and "it/s" not in piped.stderr and "s/it" not in piped.stderr
