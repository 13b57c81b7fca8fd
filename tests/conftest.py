"""Shared fixtures: small real HDF5 data and a tiny member config."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.support.trust_run import trust_data, trust_run  # noqa: F401  (fixtures for the whole run)
from videns.data.demo import write_demo_data

REPO = Path(__file__).resolve().parents[1]


def _current_umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


STARTING_UMASK = _current_umask()


@pytest.fixture(autouse=True)
def restore_umask():
    """Every test starts with the umask pytest started with.

    Entry points called in-process set umask 077 for the rest of the process. So do
    the fixtures for the whole run that launch runs, outside any test: a per-test "restore what was
    found" then kept 077, and files a later test wrote for user nobody were root's only.
    """
    os.umask(STARTING_UMASK)
    yield
    os.umask(STARTING_UMASK)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """Small demo data (240 items: 144 train, 48 val, 48 test), written once per test run."""
    root = tmp_path_factory.mktemp("demo")
    write_demo_data(root, num_videos=240, feature_dim=16, seed=0)
    return root


@pytest.fixture
def one_thread():
    """One torch thread: on a 2-core machine shared with subprocesses, two threads thrash."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ecg_root(tmp_path_factory) -> Path:
    """Small converted heartbeat data (D=1, fixed length), once per module."""
    from tests.support.ecg_data import write_ecg_data

    return write_ecg_data(tmp_path_factory.mktemp("ecg"))


@pytest.fixture(scope="module")
def module_on_one_thread():
    """The same for a whole module of tiny in-process models: 10-40x faster than two spin-waiting threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def restore_log_handlers():
    """Entry points add file handlers to the root logger; drop them so tests do not write into each other's runs."""
    import logging

    root = logging.getLogger()
    before = list(root.handlers)
    yield
    for handler in root.handlers[:]:
        if handler not in before:
            root.removeHandler(handler)
            handler.close()


def tiny_member_args(root: Path, out_dir: Path, *extra: str) -> list[str]:
    """A member that trains in seconds on ``demo_root`` data."""
    return [
        "--data.root",
        str(root),
        "--out_dir",
        str(out_dir),
        "--seed",
        "7",
        "--model.class_path",
        "videns.models.TemporalAttentionClassifier",
        "--model.init_args.hidden_dim",
        "16",
        "--model.init_args.num_lstm_layers",
        "1",
        "--model.init_args.num_attention_heads",
        "2",
        "--model.init_args.head_dims",
        "[16]",
        "--model.init_args.dropout",
        "0.2",
        "--trainer.batch_size",
        "16",
        "--trainer.max_epochs",
        "3",
        "--trainer.progress",
        "off",
        "--optimizer.lr",
        "3e-3",
        "--schedule.t0_epochs",
        "2",
        *extra,
    ]


def run_module(module: str, args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` from the repo root, capturing output."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True, **kwargs
    )


def start_module(module: str, args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
