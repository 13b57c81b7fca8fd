"""jobs.launch and jobs.status without SLURM: submitit's local executor, real subprocesses and signals."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from jobs import launch, status
from slurm.cluster import ClusterConfig, local_executor
from slurm.tasks import outcome_recorded, task_succeeded
from tests.support.member_files import assert_members_identical
from videns.config import parse_member_config
from videns.folders import task_outcome_beside

REPO = Path(__file__).resolve().parents[1]


def member_args(demo_root: Path, *extra: str) -> list[str]:
    """A tiny member (a few seconds per epoch on one core), on the shared demo data."""
    return [
        "--config",
        str(REPO / "configs" / "demo.yaml"),
        "--data.root",
        str(demo_root),
        "--data.generate_demo",
        "false",
        "--seed",
        "7",
        "--model.init_args.hidden_dim",
        "16",
        "--model.init_args.num_attention_heads",
        "2",
        "--model.init_args.head_dims",
        "[16]",
        "--trainer.batch_size",
        "16",
        "--trainer.max_epochs",
        "3",
        "--trainer.patience",
        "0",
        "--trainer.progress",
        "off",
        "--checkpoint.every_steps",
        "4",
        *extra,
    ]


def run_launch(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "jobs.launch", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


def one_error_line(capsys, args: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        launch.main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("jobs.launch: error: ")
    return err


# ---------------------------------------------------------------- bad input, dry run


def test_missing_config_file_is_one_line_and_writes_nothing(capsys, tmp_path, demo_root):
    run_dir = tmp_path / "run"
    err = one_error_line(capsys, ["--config", str(tmp_path / "nope.yaml"), "--run_dir", str(run_dir)])
    assert "nope.yaml" in err and "does not exist" in err
    assert not run_dir.exists()


def test_unknown_key_in_config_file_is_one_line_and_writes_nothing(capsys, tmp_path, demo_root):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"max_epoch": 3}}))  # typo of max_epochs
    run_dir = tmp_path / "run"
    err = one_error_line(capsys, [*member_args(demo_root), "--config", str(config), "--run_dir", str(run_dir)])
    assert "max_epoch" in err and "bad.yaml" in err
    assert not run_dir.exists()


def test_unknown_option_and_bad_cluster_value_are_one_line(capsys, tmp_path, demo_root):
    run_dir = tmp_path / "run"
    assert "--trainer.epochs" in one_error_line(
        capsys, [*member_args(demo_root), "--trainer.epochs", "3", "--run_dir", str(run_dir)]
    )
    assert "slurm.time_min" in one_error_line(
        capsys, [*member_args(demo_root), "--slurm.time_min", "0", "--run_dir", str(run_dir)]
    )
    assert "--array" in one_error_line(capsys, [*member_args(demo_root), "--array", "0", "--run_dir", str(run_dir)])
    assert not run_dir.exists()


def test_default_config_without_data_points_to_the_demo(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # configs/ensemble.yaml's data/features is relative to here: absent
    err = one_error_line(capsys, ["--array", "4"])
    assert "data/features" in err and "configs/demo.yaml" in err
    assert list(tmp_path.iterdir()) == []


def test_dry_run_prints_both_sbatch_scripts_and_writes_nothing(capsys, tmp_path):
    data = tmp_path / "demo-data"  # generate_demo is on in demo.yaml: a dry run must not generate it
    run_dir = tmp_path / "run"
    code = launch.main(
        [
            "--array",
            "3",
            "--config",
            str(REPO / "configs" / "demo.yaml"),
            "--data.root",
            str(data),
            "--data.generate_demo",
            "true",
            "--run_dir",
            str(run_dir),
            "--dry_run",
            "--site",
            "local",
            "--slurm.gres",
            "gpu:a100_1g.10gb:1",
            "--slurm.setup",
            "[module load cuda/12]",
            "--slurm.max_requeue_on_timeout",
            "5",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    member_script, ensemble_script = out.split("# ensemble job")
    for line in (
        "#SBATCH --array=0-2%3",
        "#SBATCH --requeue",
        "#SBATCH --gres=gpu:a100_1g.10gb:1",
        "#SBATCH --partition=mig",
        "#SBATCH --signal=USR2@60",
        "#SBATCH --time=30",
        "#SBATCH --cpus-per-task=1",
        "module load cuda/12",
        "%A_%a",
    ):
        assert line in member_script, line
    assert "--dependency='afterany:<array job id>'" in ensemble_script
    assert "#SBATCH --requeue" in ensemble_script and "--array" not in ensemble_script
    assert "--gres" not in ensemble_script  # the local profile gives the evaluation no slice
    assert not run_dir.exists() and not data.exists()


# ---------------------------------------------------------------- a whole local run, then relaunches


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, demo_root):
    run_dir = tmp_path_factory.mktemp("local") / "run"
    args = [*member_args(demo_root), "--array", "2", "--cluster", "local", "--run_dir", str(run_dir)]
    started = time.monotonic()
    proc = run_launch(args)
    return run_dir, args, proc, time.monotonic() - started


@pytest.mark.slow
def test_local_launch_trains_every_member_then_the_ensemble(local_run):
    run_dir, _, proc, _ = local_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    launch_record = json.loads((run_dir / "launch.json").read_text())
    assert launch_record["seeds"] == [7, 8] and launch_record["cluster"] == "local"
    assert set(launch_record["member_job_ids"]) == {"7", "8"} and launch_record["ensemble_job_id"]
    for seed in (7, 8):
        result = json.loads((run_dir / "members" / f"seed_{seed}" / "result.json").read_text())
        assert result["status"] == "finished" and result["epoch"] == 3
    report = json.loads((run_dir / "ensemble" / "report.json").read_text())  # written by the dependent job
    assert [m["seed"] for m in report["members"]] == [7, 8] and report["skipped"] == []
    assert report["num_items"] == 48 and 0.0 <= report["ensemble"]["accuracy"] <= 1.0
    assert "ensemble (2)" in proc.stdout  # the ensemble job's table is shown
    assert f"report: {run_dir / 'ensemble' / 'report.json'}" in proc.stdout
    private = [
        run_dir,
        run_dir / "members",
        run_dir / "logs",
        run_dir / "ensemble",
        *(run_dir / "members").iterdir(),
        *(run_dir / "logs").iterdir(),
    ]
    assert {str(p): oct(p.stat().st_mode & 0o777) for p in private} == {str(p): "0o700" for p in private}


@pytest.mark.slow
def test_saved_configs_are_exact_for_the_run_and_for_each_member(local_run):
    """RUN/config.yaml belongs to no single member; each member's own config.yaml is exactly its own."""
    run_dir = local_run[0]
    shared = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert "seed" not in shared and "out_dir" not in shared
    assert Path(shared["data"]["root"]).is_absolute()  # tasks may start in another working directory
    for seed in (7, 8):
        own = yaml.safe_load((run_dir / "members" / f"seed_{seed}" / "config.yaml").read_text())
        assert own["seed"] == seed and own["out_dir"] == str(run_dir / "members" / f"seed_{seed}")
        assert {k: v for k, v in own.items() if k not in ("seed", "out_dir")} == shared
        member = parse_member_config(["--config", str(run_dir / "members" / f"seed_{seed}" / "config.yaml")])
        assert member.seed == seed and member.trainer.max_epochs == 3


def copied_run(local_run, tmp_path: Path) -> tuple[Path, list[str]]:
    """A private copy of the finished run, so that a test may relaunch it without touching the shared one."""
    run_dir, args, _, _ = local_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, symlinks=True)
    return copy, [a if a != str(run_dir) else str(copy) for a in args]


@pytest.mark.slow
def test_status_reports_each_member_and_the_ensemble(local_run, capsys):
    run_dir = local_run[0]
    assert status.main(["--run_dir", str(run_dir)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:4]}
    assert rows["7"][1] == "done" and rows["7"][2] == "3/3"
    assert rows["8"][1] == "done"
    assert "ensemble: done" in out


@pytest.mark.slow
def test_relaunch_gives_finished_members_no_task(local_run, tmp_path):
    run_dir, _ = copied_run(local_run, tmp_path)
    before = json.loads((run_dir / "launch.json").read_text())
    members = {p: p.read_bytes() for p in run_dir.glob("members/*/*") if p.is_file()}
    proc = run_launch(["--run_dir", str(run_dir), "--cluster", "local"])  # its own config, its own seeds
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {p: p.read_bytes() for p in run_dir.glob("members/*/*") if p.is_file()} == members  # logs included
    record = json.loads((run_dir / "launch.json").read_text())
    assert record["seeds"] == [7, 8] and record["trained"] == [] and len(record["previous"]) == 1
    assert record["member_job_ids"] == before["member_job_ids"]  # the jobs that trained them, kept
    assert record["ensemble_job_id"] != before["ensemble_job_id"]  # the ensemble was evaluated again
    assert "running 0 member(s)" not in proc.stdout
    dry = run_launch(["--run_dir", str(run_dir), "--cluster", "slurm", "--dry_run"])
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "# ensemble job (every member is done)" in dry.stdout and "dependency" not in dry.stdout
    assert "#SBATCH --array" not in dry.stdout  # no member script at all


@pytest.mark.slow
def test_raising_max_epochs_gives_finished_members_a_task_again(local_run, tmp_path):
    run_dir, _ = copied_run(local_run, tmp_path)
    proc = run_launch(["--run_dir", str(run_dir), "--cluster", "local", "--trainer.max_epochs", "4"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((run_dir / "launch.json").read_text())["trained"] == [7, 8]
    for seed in (7, 8):
        assert json.loads((run_dir / "members" / f"seed_{seed}" / "result.json").read_text())["epoch"] == 4


@pytest.mark.slow
def test_growing_a_run_trains_only_the_new_seeds_and_evaluates_all(local_run, tmp_path):
    run_dir, _ = copied_run(local_run, tmp_path)
    checkpoints = {p: p.stat().st_mtime_ns for p in run_dir.glob("members/*/checkpoints/*/*")}
    proc = run_launch(["--run_dir", str(run_dir), "--cluster", "local", "--array", "3"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == checkpoints  # seeds 7 and 8 untouched
    record = json.loads((run_dir / "launch.json").read_text())
    assert record["seeds"] == [7, 8, 9] and record["trained"] == [9]
    assert json.loads((run_dir / "members" / "seed_9" / "result.json").read_text())["status"] == "finished"
    report = json.loads((run_dir / "ensemble" / "report.json").read_text())
    assert [m["seed"] for m in report["members"]] == [7, 8, 9]


@pytest.mark.slow
def test_relaunch_under_a_changed_config_is_refused_unless_forced(local_run, capsys, tmp_path):
    run_dir, args = copied_run(local_run, tmp_path)
    saved = (run_dir / "config.yaml").read_text()
    launch_before = (run_dir / "launch.json").read_text()
    err = one_error_line(capsys, [*args, "--optimizer.lr", "0.01"])
    assert "optimizer.lr: 0.003 -> 0.01" in err and "--force" in err
    assert (run_dir / "config.yaml").read_text() == saved and (run_dir / "launch.json").read_text() == launch_before
    proc = run_launch([*args, "--optimizer.lr", "0.01", "--force"])  # really relaunched, not a dry run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["optimizer"]["lr"] == 0.01
    record = json.loads((run_dir / "launch.json").read_text())
    assert record["config_hash"] != json.loads(launch_before)["config_hash"] and len(record["previous"]) == 1


@pytest.mark.slow
def test_a_failed_member_is_reported_and_the_ensemble_still_runs(local_run, capsys, tmp_path):
    """Growing the run to three members where the third cannot even create its folder."""
    run_dir, _ = copied_run(local_run, tmp_path)
    (run_dir / "members" / "seed_9").write_text("a file where the member folder should be")
    proc = run_launch(["--run_dir", str(run_dir), "--cluster", "local", "--array", "3"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "seed 9: FAILED" in proc.stdout
    report = json.loads((run_dir / "ensemble" / "report.json").read_text())
    assert [entry["seed"] for entry in report["skipped"]] == [9]  # the evaluation ran and names the failed member
    assert status.main(["--run_dir", str(run_dir)]) == 1
    out = capsys.readouterr().out
    assert next(line for line in out.splitlines() if line.startswith("9 ")).split()[1] == "failed"
    assert "ensemble: done" in out


def test_status_of_a_folder_that_is_no_run_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        status.main(["--run_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "not a run folder" in capsys.readouterr().err


# ---------------------------------------------------------------- preemption, locally


def wait_for_progress(member: Path, min_step: int, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            progress = json.loads((member / "progress.json").read_text())
            if progress["global_step"] >= min_step and progress["status"] == "running":
                return progress
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{member}: no progress past step {min_step} in {timeout_s} s")


@pytest.mark.slow
def test_usr2_requeues_a_local_member_which_resumes_bit_identically(tmp_path, demo_root):
    """submitit's local executor reruns a task that requeues itself; the rerun resumes, not restarts."""
    run_dir = tmp_path / "run"
    args = [
        *member_args(demo_root),
        "--array",
        "1",
        "--cluster",
        "local",
        "--run_dir",
        str(run_dir),
        "--slurm.cpus_per_task",
        "1",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "jobs.launch", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # The unpreempted reference: same config, same seed, same single thread.
    reference = tmp_path / "reference"
    member = run_dir / "members" / "seed_7"
    progress = wait_for_progress(member, min_step=4)
    os.kill(progress["pid"], signal.SIGUSR2)
    out, _ = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, out
    subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.train",
            "--config",
            str(run_dir / "config.yaml"),
            "--seed",
            "7",
            "--out_dir",
            str(reference),
        ],
        cwd=REPO,
        env={**env, "OMP_NUM_THREADS": "1"},
        check=True,
        capture_output=True,
        timeout=300,
    )
    final = json.loads((member / "progress.json").read_text())
    assert final["status"] == "finished" and final["restarts"] == 1
    log = (member / "train.log").read_text()
    assert "handing over to submitit to requeue" in log
    resumed = [line for line in log.splitlines() if "resuming seed 7 from step-" in line]
    assert len(resumed) == 1 and "epoch 1, batch 0" not in resumed[0]
    assert_members_identical(member, reference)


def as_at_a_terminal() -> None:
    """SIGINT's default action, as in a terminal's foreground job.

    A shell without job control starts background commands with SIGINT ignored, and
    Python keeps an inherited SIG_IGN: a test suite started with ``&`` would otherwise
    hand the launcher a Ctrl-C it cannot see.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_stops_local_members_at_a_step_boundary(tmp_path, demo_root):
    """A terminal's Ctrl-C reaches the launcher only; it stops each member with SIGTERM, which saves first."""
    run_dir = tmp_path / "run"
    args = [
        *member_args(demo_root),
        "--trainer.max_epochs",
        "40",
        "--array",
        "2",
        "--cluster",
        "local",
        "--run_dir",
        str(run_dir),
    ]
    launcher = subprocess.Popen(
        [sys.executable, "-m", "jobs.launch", *args],
        cwd=REPO,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=as_at_a_terminal,
    )
    for seed in (7, 8):
        wait_for_progress(run_dir / "members" / f"seed_{seed}", min_step=4)
    os.killpg(launcher.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground process group
    out, _ = launcher.communicate(timeout=120)
    assert launcher.returncode == 130, out
    assert "the same command" in out and "Traceback" not in out
    for seed in (7, 8):
        member = run_dir / "members" / f"seed_{seed}"
        progress = json.loads((member / "progress.json").read_text())
        assert progress["status"] == "interrupted" and progress["epoch"] < 40
        log = (member / "train.log").read_text()
        assert "received SIGTERM" in log and "KeyboardInterrupt" not in log


def test_auto_runs_locally_when_sbatch_is_missing_or_the_controller_is_silent(monkeypatch, caplog):
    from slurm import cluster as _cluster

    monkeypatch.setattr(_cluster.shutil, "which", lambda name: None)
    assert _cluster.choose_cluster("auto") == "local"
    monkeypatch.setattr(_cluster.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(_cluster, "controller_answers", lambda: False)
    with caplog.at_level("WARNING"):
        assert _cluster.choose_cluster("auto") == "local"
    assert "does not answer" in caplog.text
    monkeypatch.setattr(_cluster, "controller_answers", lambda: True)
    assert _cluster.choose_cluster("auto") == "slurm"


class ReportVisibleGpus:
    """Reads CUDA_VISIBLE_DEVICES inside the task, after the task's own environment fix."""

    def __init__(self, env):
        self.env = env

    def __call__(self):
        from slurm.tasks import apply_env

        apply_env(self.env)
        return os.environ.get("CUDA_VISIBLE_DEVICES")


@pytest.mark.parametrize("visible", [None, "MIG-4f1c2a3b-0000-1111-2222-333344445555"])
def test_local_tasks_see_the_launchers_gpus(tmp_path, monkeypatch, visible):
    """submitit's local executor hides every GPU (CUDA_VISIBLE_DEVICES=""); members must see the launcher's."""
    from slurm.cluster import ClusterConfig, local_executor, local_task_env

    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    executor = local_executor(tmp_path / "%j", ClusterConfig())
    assert executor.submit(ReportVisibleGpus({})).result() == ""  # what submitit alone does
    assert executor.submit(ReportVisibleGpus(local_task_env())).result() == visible


class _EndsWith:
    """A submitit task that records its outcome, then returns or raises."""

    def __init__(self, fail: bool):
        self.fail = fail

    def __call__(self) -> int:
        with outcome_recorded():
            if self.fail:
                raise ValueError("boom")
            return 1


def test_task_outcome_is_read_from_its_json_never_the_result_pickle(tmp_path):
    executor = local_executor(tmp_path / "%j", ClusterConfig(gres=""))
    ok, failed = executor.submit(_EndsWith(False)), executor.submit(_EndsWith(True))
    deadline = time.monotonic() + 60
    while not (ok.done() and failed.done()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert task_succeeded(ok) and not task_succeeded(failed)
    assert "ValueError: boom" in json.loads(task_outcome_beside(failed.paths.result_pickle).read_text())["error"]
    task_outcome_beside(ok.paths.result_pickle).unlink()  # the result pickle is still there, and is not read
    assert ok.paths.result_pickle.exists() and not task_succeeded(ok)


LATE_SIGNAL_SCRIPT = """
import os, signal
from slurm.tasks import outcome_recorded

signal.signal(signal.SIGUSR2, lambda *_: None)  # a Python handler, as submitit installs one


class SignalDuringShutdown:
    # Module globals are torn down after Python has put its signal handlers back to the default.
    def __del__(self, kill=os.kill, pid=os.getpid(), usr2=signal.SIGUSR2):
        kill(pid, usr2)


late = SignalDuringShutdown()
with outcome_recorded():
    {work}
"""


@pytest.mark.parametrize("work, survives", [("pass", True), ("raise SystemExit(0)", False)])
def test_a_usr2_while_a_finished_task_shuts_down_does_not_kill_it(work, survives):
    """SLURM sends the time-limit USR2 up to a minute early; one during Python's shutdown killed a finished job.

    A task stopped by SystemExit (a requeue) has not finished, and keeps USR2's meaning.
    """
    done = subprocess.run(
        [sys.executable, "-c", LATE_SIGNAL_SCRIPT.format(work=work)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == (0 if survives else -signal.SIGUSR2), done.stderr
