"""A member stopped at any moment continues as if nothing had happened.

Every test here stops a member with a real signal, a real ``python -m jobs.train``
process or (for a moment a process hits only by chance) this one, and compares
the end result, bit for bit, with an uninterrupted member.
"""

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import run_module, start_module, tiny_member_args
from tests.support.member_files import assert_members_identical, checkpoint_state, latest_checkpoint
from videns.config import parse_member_config
from videns.folders import MemberFolder
from videns.member.ledger import read_mark
from videns.member.train import train_member
from videns.training.interrupt import StopSignals

pytestmark = pytest.mark.slow  # every test trains a member at least twice: 25-90 s each

INTERRUPTED = 128 + signal.SIGTERM
TOTAL_STEPS = 2 * 18  # member_args: 2 epochs of 18 batches


def member_args(root: Path, out: Path, *extra: str) -> list[str]:
    # 18 batches per epoch, so a signal lands mid-epoch.
    return tiny_member_args(root, out, "--trainer.batch_size", "8", "--trainer.max_epochs", "2", *extra)


@pytest.fixture(scope="module")
def reference(demo_root, tmp_path_factory) -> Path:
    """An uninterrupted member, saving only at epoch ends."""
    out = tmp_path_factory.mktemp("reference") / "member"
    result = run_module("jobs.train", member_args(demo_root, out, "--checkpoint.every_minutes", "0"))
    assert result.returncode == 0, result.stderr
    return out


def wait_for_checkpoint(member: Path, min_step: int = 1, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = [int(p.name.split("-")[1]) for p in (member / "checkpoints").glob("step-*")]
        if steps and max(steps) >= min_step:
            return
        time.sleep(0.005)
    raise AssertionError(f"no checkpoint with step >= {min_step} in {member}")


def reached_step(member: Path) -> int:
    """The highest step the member has reached, from the step mark it rewrites after every step."""
    mark = read_mark(MemberFolder(member).reached_step)
    return mark[0] if mark else 0


def wait_for_step(proc, member: Path, step: int, timeout: float = 180) -> float:
    """Wait until the running member has reached ``step``; returns the monotonic time it was seen."""
    deadline = time.monotonic() + timeout
    while reached_step(member) < step:
        assert proc.poll() is None, f"the member ended before step {step}"
        assert time.monotonic() < deadline, f"no step {step} in {member} within {timeout} s"
        time.sleep(0.001)
    return time.monotonic()


def finish(root: Path, out: Path, *extra: str):
    result = run_module("jobs.train", member_args(root, out, *extra))
    assert result.returncode == 0, result.stderr
    return result


def interrupt_with_sigterm(root: Path, out: Path, *extra: str, min_step: int = 1) -> dict:
    proc = start_module("jobs.train", member_args(root, out, "--checkpoint.every_steps", "1", *extra))
    wait_for_step(proc, out, min_step)  # then it stops at the end of the step it is in, and saves
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == INTERRUPTED, output
    return checkpoint_state(latest_checkpoint(out))["training"]


def test_sigterm_mid_epoch_then_restart_is_bit_identical(demo_root, tmp_path, reference):
    out = tmp_path / "member"
    # Workers must ignore the signal; batches must not depend on their number.
    state = interrupt_with_sigterm(demo_root, out, "--data.num_workers", "2")
    assert 0 < state["batches_done"] < 18 and state["epoch"] == 0, "the stop should land mid-epoch"
    resumed = finish(demo_root, out)
    assert "resuming seed 7" in resumed.stderr
    assert json.loads((out / "progress.json").read_text())["restarts"] == 1
    assert_members_identical(out, reference)


def test_a_sigterm_right_after_an_epochs_save_is_recorded_and_resumed_bit_identically(demo_root, tmp_path, reference):
    """The signal lands after the epoch's checkpoint (saved as "running") and before the loop looks for a stop.

    Sent from the epoch-end hook, in this process: a real SIGTERM at the one moment a subprocess hits by chance.
    """
    out = tmp_path / "member"

    def sigterm_after_the_first_epoch(record):
        if record["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    with StopSignals() as stop:
        outcome = train_member(
            parse_member_config(member_args(demo_root, out, "--checkpoint.every_minutes", "0")),
            stop,
            on_epoch_end=sigterm_after_the_first_epoch,
        )
    assert outcome.status == "interrupted" and outcome.signum == signal.SIGTERM
    progress = json.loads((out / "progress.json").read_text())
    assert progress["status"] == "interrupted" and progress["epoch"] == 1 and progress["batches_done"] == 0
    finish(demo_root, out)
    assert_members_identical(out, reference)


class Pruned(Exception):
    """What a sweep's epoch hook raises to stop a trial."""


def test_an_epoch_hook_that_raises_leaves_its_epoch_on_disk_and_resumable(demo_root, tmp_path, reference):
    """The hook runs while the epoch's commit may still be writing; its error goes on only once that is on disk."""
    out = tmp_path / "member"

    def prune_after_the_first_epoch(record):
        if record["epoch"] == 1:
            raise Pruned

    with pytest.raises(Pruned):
        train_member(
            parse_member_config(member_args(demo_root, out, "--checkpoint.every_minutes", "0")),
            on_epoch_end=prune_after_the_first_epoch,
        )
    training = checkpoint_state(latest_checkpoint(out))["training"]
    assert training["epoch"] == 1 and training["batches_done"] == 0
    assert json.loads((out / "progress.json").read_text())["epoch"] == 1
    finish(demo_root, out)
    assert_members_identical(out, reference)


def test_sigkill_after_a_periodic_save_then_restart_is_bit_identical(demo_root, tmp_path, reference):
    out = tmp_path / "member"
    proc = start_module("jobs.train", member_args(demo_root, out, "--checkpoint.every_steps", "5"))
    wait_for_checkpoint(out, min_step=5)
    proc.kill()
    proc.wait(timeout=30)
    assert not checkpoint_state(latest_checkpoint(out))["training"]["finished"]
    finish(demo_root, out, "--checkpoint.every_steps", "5")
    assert_members_identical(out, reference)


def test_random_sigkills_of_a_member_never_break_resume(demo_root, tmp_path, reference):
    """Three SIGKILLs, each at a random step after this run's first save, each before training ended.

    Where to kill is counted in steps, read from the step mark: each kill lands within about two
    steps of a random one, 10 or more steps before the end however fast the member trains.
    """
    out = tmp_path / "member"
    rng = random.Random(1234)
    step = 0
    for _ in range(3):
        proc = start_module("jobs.train", member_args(demo_root, out, "--checkpoint.every_steps", "1"))
        wait_for_checkpoint(out, min_step=step + 1 + rng.randrange(6))  # saved since it (re)started
        current = reached_step(out)
        assert current <= TOTAL_STEPS - 10, f"step {current}: too close to the end to be sure to kill before it"
        step_began = wait_for_step(proc, out, current + 1)
        step_s = wait_for_step(proc, out, current + 2) - step_began  # one step, with its commit, on this machine
        time.sleep(rng.uniform(0.0, step_s))  # anywhere inside the next step, or inside a commit
        assert proc.poll() is None, "the member ended before it could be killed"
        proc.kill()
        assert proc.wait(timeout=30) == -signal.SIGKILL
        training = checkpoint_state(latest_checkpoint(out))["training"]
        assert not training["finished"] and training["global_step"] > step
        step = training["global_step"]
    finish(demo_root, out, "--checkpoint.every_steps", "1")
    assert_members_identical(out, reference)


@pytest.mark.parametrize("damage", ["truncate_model", "flip_optimizer_bit", "drop_manifest"])
def test_corrupt_newest_checkpoint_falls_back_to_the_previous(demo_root, tmp_path, reference, damage):
    out = tmp_path / "member"
    interrupt_with_sigterm(demo_root, out, min_step=2)
    newest, previous = sorted((out / "checkpoints").glob("step-*"))[-1:-3:-1]
    if damage == "truncate_model":
        model = newest / "model.safetensors"
        model.write_bytes(model.read_bytes()[:-100])
    elif damage == "flip_optimizer_bit":
        optimizer = newest / "optimizer.safetensors"
        data = bytearray(optimizer.read_bytes())
        data[len(data) // 2] ^= 0x01
        optimizer.write_bytes(bytes(data))
    else:
        (newest / "manifest.json").unlink()
    resumed = finish(demo_root, out)
    assert f"skipping checkpoint {newest.name}" in resumed.stderr
    assert f"from {previous.name}" in resumed.stderr
    assert_members_identical(out, reference)


def test_changed_config_is_refused_unless_forced(demo_root, tmp_path):
    out = tmp_path / "member"
    interrupt_with_sigterm(demo_root, out)
    refused = run_module("jobs.train", member_args(demo_root, out, "--optimizer.lr", "1e-2"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "config hash" in refused.stderr and "--checkpoint.force true" in refused.stderr
    forced = run_module(
        "jobs.train", member_args(demo_root, out, "--optimizer.lr", "1e-2", "--checkpoint.force", "true")
    )
    assert forced.returncode == 0, forced.stderr


def test_checkpoint_holds_everything_needed_and_no_pickle(demo_root, tmp_path):
    out = tmp_path / "member"
    interrupt_with_sigterm(demo_root, out)
    folder = latest_checkpoint(out)
    assert sorted(p.name for p in folder.iterdir()) == [
        "manifest.json",
        "model.safetensors",
        "optimizer.safetensors",
        "state.json",
    ]
    state = checkpoint_state(folder)
    training = state["training"]
    for key in (
        "epoch",
        "batches_done",
        "global_step",
        "best_val_accuracy",
        "bad_epochs",
        "history",
        "seed",
        "config_hash",
        "loss_sum",
    ):
        assert key in training
    assert training["seed"] == 7 and len(training["config_hash"]) == 16
    assert {"param_groups", "scalars"} <= set(state["optimizer"]) and {"numpy", "python"} <= set(state["rng"])
    assert (out / "checkpoints" / "latest").resolve() == folder.resolve()
    interrupt_with_sigterm(demo_root, out, min_step=state["training"]["global_step"] + 2)
    assert len(list((out / "checkpoints").glob("step-*"))) == 2  # keep=2
