"""One launcher per run folder and one writer per member folder, enforced by the kernel's flock.

Real processes race for real folders; a lock's holder dies by a real SIGKILL.
"""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_module, start_module, tiny_member_args
from tests.support.member_files import assert_members_identical
from videns.errors import StorageError
from videns.folders import MemberFolder, RunFolder
from videns.locks import ALLOW_UNLOCKED_ENV, FolderLock, _unsupported, holder_of
from videns.member.ledger import read_mark

PAIRS = 8  # each pair takes ~29 s; 20 pairs cost CI almost 10 minutes


def launch_command(root: Path, run_dir: Path) -> list[str]:
    """A two-member local launch that takes a few seconds: one epoch of a tiny member each."""
    member = tiny_member_args(root, run_dir / "unused")
    member = member[member.index("--seed") + 2 :]  # the run chooses the seeds and folders
    return [
        sys.executable,
        "-m",
        "jobs.launch",
        "--config",
        str(REPO / "configs" / "demo.yaml"),
        "--array",
        "2",
        "--cluster",
        "local",
        "--run_dir",
        str(run_dir),
        "--data.root",
        str(root),
        *member,
        "--trainer.max_epochs",
        "1",
    ]


def starting_lines(member: MemberFolder) -> int:
    if not member.log.exists():
        return 0
    return sum(" starting in " in line for line in member.log.read_text().splitlines())


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_concurrent_launches_of_one_run_folder_train_each_member_once(demo_root, tmp_path):
    refusals = 0
    for pair in range(PAIRS):
        run = RunFolder(tmp_path / f"run{pair}")
        command = launch_command(demo_root, run.root)
        procs = [
            subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        results = [(p.returncode, *out) for p in procs for out in [p.communicate(timeout=600)]]
        winners = [r for r in results if r[0] == 0]
        losers = [r for r in results if r[0] != 0]
        assert winners, results
        for code, _stdout, stderr in losers:
            assert code == 2 and "Traceback" not in stderr, stderr
            assert len(stderr.strip().splitlines()) == 1 and "run folder is in use by pid" in stderr, stderr
        refusals += len(losers)
        for seed in (42, 43):
            assert starting_lines(run.member(seed)) == 1, f"pair {pair}: seed {seed} trained more than once"
        assert json.loads(run.launch_file.read_text())["seeds"] == [42, 43]
    assert refusals > 0  # the pairs did overlap; otherwise this tested nothing


@pytest.mark.slow
def test_a_second_trainer_of_one_member_folder_refuses_and_the_first_is_untouched(demo_root, tmp_path):
    solo, out = tmp_path / "solo", tmp_path / "member"
    args = ["--trainer.max_epochs", "4", "--checkpoint.every_steps", "3"]
    assert run_module("jobs.train", tiny_member_args(demo_root, solo, *args)).returncode == 0
    first = start_module("jobs.train", tiny_member_args(demo_root, out, *args))
    wait_for_step(MemberFolder(out), 2)
    first.send_signal(signal.SIGSTOP)  # holds its lock, and cannot finish before the second has tried
    try:
        second = run_module("jobs.train", tiny_member_args(demo_root, out, *args))
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    assert f"member folder is in use by pid {first.pid} on " in second.stderr
    assert first.wait(timeout=300) == 0, first.stdout.read()
    assert_members_identical(out, solo)


def test_a_killed_holder_leaves_no_lock_behind(demo_root, tmp_path):
    member = MemberFolder(tmp_path / "member")
    proc = start_module("jobs.train", tiny_member_args(demo_root, member.root, "--trainer.max_epochs", "50"))
    wait_for_step(member, 2)
    holder = holder_of(member.lock)
    assert holder is not None and holder["pid"] == proc.pid
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30  # DataLoader workers (none here) would hold it until they notice
    while holder_of(member.lock) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert holder_of(member.lock) is None
    with FolderLock(member.lock, "member folder"):  # and it can be taken again at once
        assert holder_of(member.lock) is None  # this process's own lock is not "another holder"


def test_a_forked_child_that_outlives_the_holder_does_not_keep_its_lock(tmp_path):
    """A DataLoader worker forked by a member's trainer must not refuse the requeued task that follows it."""
    lock_file = tmp_path / ".lock"
    script = (
        "import os, sys, time; from videns.locks import FolderLock; "
        f"FolderLock({str(lock_file)!r}, 'probe folder').acquire(); child = os.fork(); "
        "time.sleep(0 if child else 60); print(child, flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    child = int(holder.stdout.readline())
    try:
        assert holder_of(lock_file)["pid"] == holder.pid
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        os.kill(child, 0)  # the child is still alive ...
        assert holder_of(lock_file) is None  # ... and the lock died with its holder
    finally:
        os.kill(child, signal.SIGKILL)


def test_the_lock_is_reentrant_within_a_process_and_exclusive_across_processes(tmp_path):
    lock_file = tmp_path / ".lock"
    probe = [
        sys.executable,
        "-c",
        f"import sys; from videns.locks import FolderLock; FolderLock({str(lock_file)!r}, 'probe folder').acquire()",
    ]
    with FolderLock(lock_file, "test folder"):
        with FolderLock(lock_file, "test folder"):
            pass
        refused = subprocess.run(probe, cwd=REPO, capture_output=True, text=True)  # still held after the inner one
        assert (
            refused.returncode != 0
            and "LockHeld" in refused.stderr
            and "probe folder is in use by pid" in refused.stderr
        )
    assert subprocess.run(probe, cwd=REPO, capture_output=True, text=True).returncode == 0


def wait_for_step(member: MemberFolder, step: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        mark = read_mark(member.reached_step)
        if mark and mark[0] >= step:
            return
        time.sleep(0.01)
    raise AssertionError(f"{member.root} never reached step {step}")


def test_a_filesystem_that_refuses_locks_refuses_the_start_unless_allowed(tmp_path, monkeypatch, caplog):
    """What FolderLock does with flock's ENOLCK (Lustre -o noflock, NFS without lockd); no such mount exists here,
    so the error is the one such a filesystem gives, handed to the same code."""
    refused = OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
    monkeypatch.delenv(ALLOW_UNLOCKED_ENV, raising=False)
    with pytest.raises(StorageError, match=f"refuses file locks .*-o flock.*{ALLOW_UNLOCKED_ENV}=1"):
        _unsupported(tmp_path / ".lock", "member folder", refused)
    monkeypatch.setenv(ALLOW_UNLOCKED_ENV, "1")
    _unsupported(tmp_path / ".lock", "member folder", refused)
    assert "running without it" in caplog.text
