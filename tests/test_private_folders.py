"""Run, member and sweep folders are private: created 0700, and refused when others could write into them.

Real permission bits, real entry points as subprocesses, and (as root) a second
real user created by the test.
"""

import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from slurm.cluster import folder_guard
from slurm.tasks import MemberTask
from tests.conftest import run_module, tiny_member_args
from videns.errors import ExitCode
from videns.folders import SharedFolderError, check_private, make_private

REPO = Path(__file__).resolve().parents[1]
OTHER_USER = "videns-other"


def launch_args(demo_root: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "--config",
        str(REPO / "configs" / "demo.yaml"),
        "--data.root",
        str(demo_root),
        "--data.generate_demo",
        "false",
        "--run_dir",
        str(run_dir),
        "--cluster",
        "local",
        *extra,
    ]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_refused(result: subprocess.CompletedProcess, folder: Path, *words: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert str(folder) in lines[0] and all(w in lines[0] for w in words), lines[0]


@pytest.fixture(scope="module")
def other_user() -> str:
    """A second real user (root only: the test creates it)."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("creating a second user needs root and useradd")
    try:
        pwd.getpwnam(OTHER_USER)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", OTHER_USER], check=True)
    return OTHER_USER


def test_make_private_creates_0700_whatever_the_umask(tmp_path):
    old = os.umask(0o002)  # a group-shared project directory's usual umask
    try:
        folder = make_private(tmp_path / "a" / "run")
    finally:
        os.umask(old)
    assert mode(folder) == 0o700


@pytest.mark.slow
def test_train_creates_its_folder_0700_and_refuses_a_group_writable_one(demo_root, tmp_path):
    out = tmp_path / "member"
    result = run_module("jobs.train", tiny_member_args(demo_root, out, "--trainer.max_epochs", "1"))
    assert result.returncode == 0, result.stderr
    assert mode(out) == 0o700 and mode(out / "checkpoints") == 0o700
    assert all(not p.stat().st_mode & 0o077 for p in out.rglob("*") if not p.is_symlink())  # umask 077 inside

    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o770)
    refused = run_module("jobs.train", tiny_member_args(demo_root, shared))
    assert_refused(refused, shared, "writable by its group", "chmod -R go-w", "--allow_shared_group")
    assert list(shared.iterdir()) == []  # not even a log
    advice = refused.stderr.split(", or pass ")[1].split(" if you trust")[0].split()
    trusted = run_module("jobs.train", tiny_member_args(demo_root, shared, "--trainer.max_epochs", "1", *advice))
    assert trusted.returncode == 0, trusted.stderr  # the advice given is a command line that works


def test_relaunch_of_a_group_writable_run_is_refused_unless_the_group_is_trusted(demo_root, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    os.chmod(run_dir, 0o770)
    refused = run_module("jobs.launch", launch_args(demo_root, run_dir, "--dry_run"))
    assert_refused(refused, run_dir, "writable by its group", f"chmod -R go-w {run_dir}")
    trusted = run_module("jobs.launch", launch_args(demo_root, run_dir, "--dry_run", "--allow_shared_group", "true"))
    assert trusted.returncode == 0, trusted.stderr
    assert "group-writable; trusted because of --allow_shared_group" in trusted.stderr
    assert list(run_dir.iterdir()) == []


def test_a_world_writable_file_deep_inside_is_refused_even_for_a_trusted_group(demo_root, tmp_path):
    run_dir = tmp_path / "run"
    planted = make_private(run_dir / "logs" / "123_0") / "123_0_submitted.pkl"
    planted.write_bytes(b"not a pickle of ours")
    os.chmod(planted, 0o666)
    refused = run_module("jobs.launch", launch_args(demo_root, run_dir, "--dry_run", "--allow_shared_group", "true"))
    assert_refused(refused, planted, "writable by every user")


def test_a_run_owned_by_another_user_is_refused(demo_root, tmp_path, other_user):
    run_dir = tmp_path / "run"
    make_private(run_dir / "members")
    shutil.chown(run_dir / "members", user=other_user)
    refused = run_module("jobs.launch", launch_args(demo_root, run_dir, "--dry_run", "--allow_shared_group", "true"))
    assert_refused(refused, run_dir / "members", f"owned by {other_user}")


def test_a_sweep_folder_others_can_write_is_refused(tmp_path):
    sweep = make_private(tmp_path / "sweep")
    os.chmod(sweep, 0o777)
    refused = run_module("jobs.sweep", ["--run_dir", str(sweep), "--export"])
    assert_refused(refused, sweep, "writable by every user")


def test_the_sbatch_guard_stops_a_task_before_submitit_reads_its_folder(tmp_path):
    run_dir = make_private(tmp_path / "run")
    line = folder_guard(run_dir, allow_shared_group=False)
    assert line.endswith(f"|| exit {int(ExitCode.USER_ERROR)}") and "jobs.check_folder" in line
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ok = subprocess.run(["bash", "-c", f"{line}; echo reached"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and ok.stdout.strip() == "reached", ok.stderr
    os.chmod(run_dir, 0o775 | 0o002)
    stopped = subprocess.run(["bash", "-c", f"{line}; echo reached"], capture_output=True, text=True, env=env)
    assert stopped.returncode == 2 and "reached" not in stopped.stdout
    assert_refused(stopped, run_dir, "writable by every user")


def test_dry_run_scripts_carry_the_guard(demo_root, tmp_path):
    run_dir = tmp_path / "run"
    result = run_module("jobs.launch", launch_args(demo_root, run_dir, "--dry_run", "--site", "local"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(f"jobs.check_folder --folder {run_dir} || exit 2") == 2  # members and ensemble


def test_a_member_task_refuses_a_run_folder_made_shared_after_launch(tmp_path):
    run_dir = make_private(tmp_path / "run")
    (run_dir / "config.yaml").write_text("{}\n")
    os.chmod(run_dir, 0o770)
    with pytest.raises(SharedFolderError, match="writable by its group"):
        MemberTask(str(run_dir), 42)()


def test_check_private_skips_symlinks_but_checks_what_they_point_to(tmp_path):
    run_dir = make_private(tmp_path / "run")
    target = make_private(run_dir / "best-epoch-0001")
    (run_dir / "best").symlink_to(target.name)  # a symlink's own mode is always 0777
    check_private(run_dir)
    os.chmod(target, 0o730)
    with pytest.raises(SharedFolderError):
        check_private(run_dir)
