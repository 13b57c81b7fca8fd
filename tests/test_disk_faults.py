"""A disk that fills up mid-training, or a member folder that is read-only: one line, an honest folder, a clean resume.

Real filesystems, mounted here: a small tmpfs that the member fills, and a
read-only bind mount. Both need root; without it (or where mounting is refused)
those tests skip, saying why.
"""

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from tests.conftest import run_module, tiny_member_args
from tests.support.member_files import assert_members_identical
from videns.checkpoint.store import read_verified
from videns.config import parse_member_config
from videns.io import write_failure
from videns.logs import setup_logging
from videns.member.ledger import failed_progress, failure_cause, format_restarts, restart_record, summarize_restarts
from videns.member.train import train_member
from videns.monitor import ResourceMonitor

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a filesystem: needs root")

SIZE_UNITS = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}


def member_args(root: Path, out: Path, *extra: str) -> list[str]:
    # 9 batches per epoch; saved only at epoch ends, so the disk fills at a known save.
    return tiny_member_args(root, out, "--checkpoint.every_minutes", "0", *extra)


@pytest.fixture(scope="module", autouse=True)
def one_thread_everywhere():
    """One torch thread here and in the processes started: two threads on two shared cores thrash (10x the CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(demo_root, tmp_path_factory) -> Path:
    """An uninterrupted member, on an ordinary disk (in this process: a second interpreter costs more than it)."""
    out = tmp_path_factory.mktemp("reference") / "member"
    assert train_member(parse_member_config(member_args(demo_root, out))).status == "finished"
    return out


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


def _unmount(folder: Path) -> None:
    if subprocess.run(["umount", str(folder)], capture_output=True).returncode:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


@contextmanager
def small_tmpfs(folder: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes (rounded up to pages) mounted on ``folder``."""
    folder.mkdir(parents=True)
    mounted = _mount("-t", "tmpfs", "-o", f"size={-(-size // 1024)}k", "tmpfs", str(folder))
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        _unmount(folder)


@contextmanager
def read_only_view(source: Path, view: Path) -> Iterator[Path]:
    """``source`` seen read-only at ``view``, through a bind mount."""
    view.mkdir(parents=True)
    bound = _mount("--bind", str(source), str(view))
    if bound.returncode:
        pytest.skip(f"cannot bind-mount: {bound.stderr.strip()}")
    try:
        made_read_only = _mount("-o", "remount,bind,ro", str(view))
        if made_read_only.returncode:
            pytest.skip(f"cannot remount a bind mount read-only: {made_read_only.stderr.strip()}")
        yield view
    finally:
        _unmount(view)


def disk_use(folder: Path) -> int:
    """Bytes the files under ``folder`` take on disk, in whole blocks: what a tmpfs counts (it counts no folders)."""
    return sum(p.lstat().st_blocks * 512 for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def tree_snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder``: its kind, contents (or link target), mode and modification time."""
    snapshot = {}
    for path in [folder, *folder.rglob("*")]:
        info = path.lstat()
        if path.is_symlink():
            content = os.readlink(path)
        elif path.is_file():
            content = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            content = "folder"
        snapshot[str(path.relative_to(folder))] = (content, info.st_mode, info.st_mtime_ns)
    return snapshot


def fill_up(path: Path) -> Path:
    """A file that takes every free block of its filesystem."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as err:
        assert err.errno == errno.ENOSPC, err
    finally:
        os.close(fd)
    return path


def close_log_files_under(folder: Path) -> None:
    root = logging.getLogger()
    for handler in root.handlers[:]:
        if getattr(handler, "baseFilename", "").startswith(str(folder)):
            root.removeHandler(handler)
            handler.close()


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("jobs.train: error: ")]


def size_in_bytes(text: str) -> float:
    number, unit = text.split()
    return float(number) * SIZE_UNITS[unit]


@needs_root
def test_disk_full_mid_training_is_one_line_an_honest_folder_and_a_bit_identical_resume(demo_root, tmp_path, reference):
    checkpoint = disk_use(reference / "checkpoints" / "step-000000018")
    after_first_epoch = disk_use(reference) - checkpoint  # one checkpoint, the best model, the records
    with small_tmpfs(tmp_path / "disk", after_first_epoch + checkpoint // 2) as disk:
        member = disk / "member"
        failed = run_module("jobs.train", member_args(demo_root, member))

        assert failed.returncode == 2, failed.stderr
        assert "Traceback" not in failed.stderr
        [line] = error_lines(failed.stderr)
        reason = line.removeprefix("jobs.train: error: ")
        match = re.fullmatch(
            rf"{re.escape(str(member))}(/checkpoints)?: cannot write (step|best)-\S+: "
            r"No space left on device \((.+) free, about (.+) needed\)",
            reason,
        )
        assert match, reason
        assert size_in_bytes(match.group(3)) < size_in_bytes(match.group(4))
        assert reason in (member / "train.log").read_text()
        progress = json.loads((member / "progress.json").read_text())
        assert (progress["status"], progress["reason"], progress["stop_cause"]) == ("failed", reason, "disk_full")
        assert progress["epoch"] == 1, "it fills up while saving the second of three epochs"
        assert not [p for p in member.rglob(".tmp-*")], "a failed save leaves no temporary folder"
        [kept] = [p for p in (member / "checkpoints").glob("step-*")]
        read_verified(kept)  # the committed checkpoint is whole

        assert _mount("-o", "remount,size=8m", str(disk)).returncode == 0
        assert train_member(parse_member_config(member_args(demo_root, member))).status == "finished"
        restarts = [json.loads(line) for line in (member / "restarts.jsonl").read_text().splitlines()]
        assert [r["cause"] for r in restarts] == ["disk_full"]
        assert_members_identical(member, reference)


@needs_root
def test_a_new_member_in_a_read_only_run_folder_is_one_line_and_changes_nothing(demo_root, tmp_path):
    run = tmp_path / "run"
    (run / "members").mkdir(parents=True)
    before = tree_snapshot(run)
    with read_only_view(run, tmp_path / "read-only-run") as view:
        member = view / "members" / "seed_7"
        result = run_module("jobs.train", member_args(demo_root, member))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()  # before any work: no other line
    assert line.startswith(f"jobs.train: error: {member}:") and "read-only file system" in line.lower(), line
    assert tree_snapshot(run) == before


@needs_root
def test_a_read_only_member_folder_is_one_line_and_changes_nothing(demo_root, tmp_path, reference):
    member = tmp_path / "member"
    shutil.copytree(reference, member, symlinks=True)
    before = tree_snapshot(member)
    with read_only_view(member, tmp_path / "read-only-member") as view:
        # One epoch more than it has: it would train, were the folder writable.
        result = run_module("jobs.train", member_args(demo_root, view, "--trainer.max_epochs", "4"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"jobs.train: error: {view}:") and "read-only file system" in line.lower(), line
    assert tree_snapshot(member) == before


@needs_root
def test_a_log_file_on_a_full_disk_costs_its_lines_not_the_run(tmp_path, capsys, restore_log_handlers):
    with small_tmpfs(tmp_path / "disk", 16 * 1024) as disk:
        filler = fill_up(disk / "filler")
        setup_logging(disk / "train.log")
        log = logging.getLogger("tests.disk_faults")
        try:
            for n in range(3):
                log.info("while full %d", n)
            filler.unlink()
            log.info("with room again")
            logged = (disk / "train.log").read_text().splitlines()
        finally:
            close_log_files_under(disk)  # before the unmount
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr and "Logging error" not in stderr
    assert [line for line in stderr.splitlines() if "cannot write this log" in line] == [
        f"{disk / 'train.log'}: cannot write this log (No space left on device); until it can, its lines go to "
        "stderr only"
    ]
    assert [line.endswith("while full 2") for line in stderr.splitlines()].count(True) == 1
    assert logged[-1].endswith("with room again"), "once there is room, the lines reach the file again"


def test_over_quota_the_line_says_the_quota_not_the_filesystem_ran_out(tmp_path):
    line = str(write_failure(OSError(errno.EDQUOT, "Disk quota exceeded"), tmp_path, "step-000000018", 155_000))
    assert re.fullmatch(
        rf"{re.escape(str(tmp_path))}: cannot write step-000000018: Disk quota exceeded "
        r"\(about 155 kB needed; \S+ \w?B free on the filesystem, but not within your quota\)",
        line,
    )


def test_each_kind_of_failed_write_is_its_own_restart_cause_in_the_status_table():
    running = {"status": "running", "job_id": "5_0", "updated": 100.0}
    causes = []
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
        err = write_failure(OSError(code, os.strerror(code)), Path("/run/members/seed_7"), "progress.json")
        failed = failed_progress(running, str(err), failure_cause(err), {"job_id": "5_0"}, now=110.0)
        assert (failed["status"], failed["reason"]) == ("failed", str(err))
        causes.append(restart_record(failed, (40, 105.0), {}, 30, {"job_id": "5_1"}, now=160.0)["cause"])
    assert causes == ["disk_full", "disk_full", "error", "error"]
    by_cause = summarize_restarts([{"cause": cause} for cause in causes])["restarts_by_cause"]
    assert format_restarts(len(causes), by_cause) == "4 (disk_full 2, error 2)"


@needs_root
def test_the_resource_monitor_on_a_full_disk_stops_without_raising(tmp_path, caplog):
    """Its buffered line cannot be flushed on close either: that must not replace the error that ended training."""
    with small_tmpfs(tmp_path / "disk", 16 * 1024) as disk:
        fill_up(disk / "filler")
        monitor = ResourceMonitor(disk / "resources.jsonl", 3600.0, {"seed": 1})
        monitor.start()
        monitor.stop(error="WriteFailed: no space")  # raised OSError from close() before
    assert any("resource monitor" in r.getMessage() for r in caplog.records)
