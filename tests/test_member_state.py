"""A member is done only when it finished what its last task was launched to do; a failed task is failed everywhere."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, run_module, tiny_member_args
from videns.folders import RunFolder
from videns.io import write_json_atomically
from videns.member.state import member_state, run_expects

SEED = 7


def write_run(
    root: Path,
    *,
    task: dict | None,
    result: dict | None,
    outcome: dict | None = None,
    previous_task: dict | None = None,
) -> RunFolder:
    """A run folder as a launcher and a member task leave it (the files only)."""
    run = RunFolder(root)
    record = {"seeds": [SEED], "member_job_ids": {str(SEED): "77"}, "cluster": "local"}
    if task is not None:
        record["tasks"] = {str(SEED): task}
    if previous_task is not None:
        record["previous"] = [{"seeds": [SEED], "tasks": {str(SEED): previous_task}}]
    write_json_atomically(run.launch_file, record)
    member = run.member(SEED)
    member.root.mkdir(parents=True)
    write_json_atomically(member.progress_file, {"status": "finished" if result else "interrupted", "epoch": 3})
    if result is not None:
        write_json_atomically(member.result_file, result)
    if outcome is not None:
        write_json_atomically(run.task_outcome("77"), outcome)
    return run


FINISHED = {"status": "finished", "epoch": 3, "stop_reason": "max_epochs", "config_hash": "abc"}


@pytest.mark.parametrize(
    "case, task, result, outcome, previous, state",
    [
        ("as launched", {"config_hash": "abc", "max_epochs": 3}, FINISHED, {"status": "success"}, None, "done"),
        (
            "task failed after an older finish",
            {"config_hash": "abc", "max_epochs": 4},
            FINISHED,
            {"status": "error", "error": "StorageError: read-only"},
            None,
            "failed",
        ),
        (
            "max_epochs raised, no outcome yet",
            {"config_hash": "abc", "max_epochs": 4},
            FINISHED,
            None,
            None,
            "unfinished",
        ),
        ("finished under another config", {"config_hash": "new", "max_epochs": 3}, FINISHED, None, None, "stale"),
        ("not retrained by a forced relaunch", None, FINISHED, None, {"config_hash": "abc", "max_epochs": 3}, "done"),
        ("never finished", {"config_hash": "abc", "max_epochs": 3}, None, None, None, "unfinished"),
    ],
)
def test_member_state_rules(tmp_path, case, task, result, outcome, previous, state):
    run = write_run(tmp_path / "run", task=task, result=result, outcome=outcome, previous_task=previous)
    found = member_state(run, SEED, run_expects(run, SEED))
    assert found.state == state, (case, found)
    if state == "failed":
        assert "StorageError: read-only" in found.reason and str(run.task_log("77")) in found.reason


def test_a_finished_member_is_done_when_no_expectation_is_recorded(tmp_path):
    run = write_run(tmp_path / "run", task=None, result=FINISHED)  # a run launched before tasks were recorded
    assert run_expects(run, SEED) is None and member_state(run, SEED, None).state == "done"


@pytest.fixture
def read_only(tmp_path):
    """Bind-mounts folders read-only over themselves; unmounts them at the end."""
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    mounted = []

    def mount(folder: Path) -> None:
        for command in (["mount", "--bind", str(folder), str(folder)], ["mount", "-o", "remount,bind,ro", str(folder)]):
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"{' '.join(command)}: {done.stderr.strip()}")
            if command[1] == "--bind":
                mounted.append(folder)

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", str(folder)], check=False)


@pytest.mark.slow
def test_a_relaunch_whose_task_fails_on_a_read_only_member_is_failed_everywhere(demo_root, tmp_path, read_only):
    """The finished member is relaunched for more epochs; its folder is read-only, so its task dies."""
    member_args = tiny_member_args(demo_root, tmp_path / "unused", "--trainer.max_epochs", "2")
    member_args = member_args[member_args.index("--seed") :]  # the run chooses the folders
    run = RunFolder(tmp_path / "run")
    launch = [
        "--config",
        str(REPO / "configs" / "demo.yaml"),
        "--array",
        "1",
        "--cluster",
        "local",
        "--run_dir",
        str(run.root),
        "--data.root",
        str(demo_root),
        *member_args,
    ]
    first = run_module("jobs.launch", launch)
    assert first.returncode == 0, first.stdout + first.stderr
    member = run.member(SEED)
    before = sorted(p.name for p in member.root.iterdir())
    read_only(member.root)
    relaunch = run_module("jobs.launch", [*launch, "--trainer.max_epochs", "3"])
    assert relaunch.returncode == 1, relaunch.stdout + relaunch.stderr
    assert f"seed {SEED}: FAILED (failed): its last task" in relaunch.stdout
    assert "Read-only file system" in relaunch.stdout and f"seed {SEED}: done" not in relaunch.stdout
    status = run_module("jobs.status", ["--run_dir", str(run.root)])
    assert status.returncode == 1, status.stdout + status.stderr
    row = next(line for line in status.stdout.splitlines() if line.startswith(str(SEED)))
    assert row.split()[1] == "failed" and "2/2" in row
    report = json.loads(run.ensemble.report_json.read_text())
    assert [s["seed"] for s in report["skipped"]] == [SEED] and report["skipped"][0]["reason"].startswith("failed")
    assert sorted(p.name for p in member.root.iterdir()) == before
