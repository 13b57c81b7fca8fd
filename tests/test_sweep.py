"""jobs.sweep: space files, two local workers finishing a study, and trials resumed after a killed worker."""

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

import jobs.sweep
from tests.support.ecg_data import tiny
from videns.config import parse_member_config
from videns.errors import ConfigError
from videns.folders import MemberFolder
from videns.io import read_json
from videns.logs import setup_logging
from videns.sweep import SweepFolder, WorkerIdentity, load_study, prepare_sweep, run_worker
from videns.sweep.claims import TrialClaims
from videns.sweep.space import apply_params
from videns.sweep.spec import load_sweep_file
from videns.sweep.study import build_pruner
from videns.sweep.worker import Scheduler

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs" / "ecg_cnn1d_gru.yaml"
SPACE = {
    "model.init_args.gru_hidden": {"type": "categorical", "choices": [8, 16]},
    "data.balance": {"type": "categorical", "choices": ["smote", "oversample"]},
    "schedule.plateau_factor": {"type": "float", "low": 0.1, "high": 0.4},
}
FINISHED = {"COMPLETE", "PRUNED", "FAIL"}
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}  # the machine's cores are shared


pytestmark = pytest.mark.usefixtures("one_thread")


def sweep_file(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(
        yaml.safe_dump(
            {"recipe": str(RECIPE), "sampler": "random", "pruner": "none", "space": SPACE, **changes}, sort_keys=False
        )
    )
    return path


def sweep_args(sweep: Path, run: Path, ecg_root: Path, trials: int, *extra: str) -> list[str]:
    return ["--config", str(sweep), "--trials", str(trials), "--run_dir", str(run), *tiny(ecg_root), *extra]


def rows(run: Path) -> list[dict]:
    with (run / "trials.csv").open() as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- space files


@pytest.mark.parametrize(
    "space, words",
    [
        (
            {"model.init_args.gru_hidden": {"type": "uniform", "low": 1, "high": 2}},
            ["space.model.init_args.gru_hidden", "type must be one of"],
        ),
        (
            {"schedule.plateau_factor": {"type": "float", "low": 0.4, "high": 0.1}},
            ["space.schedule.plateau_factor", "must not exceed"],
        ),
        ({"trainer.batch_size": {"type": "categorical", "choices": []}}, ["space.trainer.batch_size", "choices"]),
        (
            {"model.init_args.num_blocks": {"type": "int", "low": 1, "high": 5, "scale": 2}},
            ["space.model.init_args.num_blocks", "unknown field(s) scale"],
        ),
        (
            {"model.init_args.gru_hiden": {"type": "categorical", "choices": [8]}},
            [
                "space.model.init_args.gru_hiden = 8",
                "does not make a valid member config",
                "gru_hiden' is not accepted",
            ],
        ),
        (
            {"model.init_args.dropout": {"type": "float", "low": 0.2, "high": 1.5}},
            ["space.model.init_args.dropout = 1.5", "dropout"],
        ),
        ("gru_hidden: 8", ["space: must be a non-empty mapping"]),
    ],
)
def test_bad_space_is_one_line_naming_file_and_key(space, words, tmp_path, ecg_root, capsys):
    sweep = sweep_file(tmp_path, space=space)
    with pytest.raises(SystemExit) as stop:
        jobs.sweep.main(sweep_args(sweep, tmp_path / "run", ecg_root, 2))
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"jobs.sweep: error: {sweep}: ") and all(w in err for w in words), err
    assert not (tmp_path / "run").exists()  # nothing written before every check passed


@pytest.mark.parametrize("extra", [[], ["--dry_run"]])
def test_data_every_trial_would_fail_on_is_refused_before_anything_starts(extra, tmp_path, ecg_root, capsys):
    data = tmp_path / "data"
    shutil.copytree(ecg_root, data)
    (data / "val_features_multiscale.h5").unlink()
    with pytest.raises(SystemExit) as stop:
        jobs.sweep.main([*sweep_args(sweep_file(tmp_path), tmp_path / "run", data, 2), "--cluster", "local", *extra])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert "val_features_multiscale.h5" in err, err
    assert not (tmp_path / "run").exists()  # no folder, no trial, no job


def test_a_continued_sweep_whose_data_is_gone_is_refused_before_a_worker_starts(tmp_path, ecg_root, capsys):
    data = tmp_path / "data"
    shutil.copytree(ecg_root, data)
    spec = load_sweep_file(sweep_file(tmp_path))
    folder = SweepFolder(tmp_path / "run")
    prepare_sweep(folder, spec, parse_member_config(["--config", str(RECIPE), *tiny(data)]), 2, "t")
    shutil.rmtree(data)
    with pytest.raises(SystemExit) as stop:
        jobs.sweep.main(["--run_dir", str(folder.root), "--cluster", "local"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f"{data}: data.root: folder does not exist" in err, err
    assert not folder.trials_dir.exists() or not any(folder.trials_dir.iterdir())  # no trial was started


def test_bad_sweep_file_keys_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"sweep.yaml: unknown key\(s\) spaces"):
        load_sweep_file(sweep_file(tmp_path, spaces={}))
    with pytest.raises(ConfigError, match=r"sweep.yaml: objective must be one of accuracy, balanced_accuracy"):
        load_sweep_file(sweep_file(tmp_path, objective="recall"))
    (tmp_path / "bad.yaml").write_text("space: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML"):
        load_sweep_file(tmp_path / "bad.yaml")


def test_heartbeat_spaces_load_and_sample_valid_member_configs():
    for search, keys in (("cnn1d_gru", 8), ("cnn2d", 5)):
        spec = load_sweep_file(REPO / "configs" / "sweep_ecg.yaml", search)
        assert len(spec.space) == keys and spec.recipe.name.startswith("ecg_")
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
        for _ in range(5):
            params = study.ask(spec.space).params
            tree = apply_params(yaml.safe_load(spec.recipe.read_text()), params)
            for key, value in params.items():
                node = tree
                for part in key.split("."):
                    node = node[part]
                assert node == value and spec.space[key]._contains(spec.space[key].to_internal_repr(value))
    gru = load_sweep_file(REPO / "configs" / "sweep_ecg.yaml", "cnn1d_gru").space
    assert gru["model.init_args.gru_hidden"].choices == (32, 64, 128, 256, 512)
    assert gru["data.balance"].choices == ("smote", "oversample")
    assert (gru["schedule.plateau_factor"].low, gru["schedule.plateau_factor"].high) == (0.1, 0.4)
    with pytest.raises(ConfigError, match="pick one with --search"):
        load_sweep_file(REPO / "configs" / "sweep_ecg.yaml")


@pytest.mark.parametrize("sweep_file, search", [("sweep_ecg.yaml", "cnn1d_gru"), ("sweep_temporal.yaml", None)])
def test_print_config_writes_the_search_as_a_sweep_file_that_reads_back_as_it(sweep_file, search, tmp_path, capsys):
    """With the command line's overrides applied, and nothing written to the sweep folder."""
    search_args = ["--search", search] if search else []
    run_dir = tmp_path / "sweep"
    assert (
        jobs.sweep.main(
            [
                "--config",
                str(REPO / "configs" / sweep_file),
                *search_args,
                "--pruner",
                "halving",
                "--sampler",
                "random",
                "--print_config",
                "--run_dir",
                str(run_dir),
            ]
        )
        == 0
    )
    printed = tmp_path / "printed.yaml"
    printed.write_text(capsys.readouterr().out)
    original = load_sweep_file(REPO / "configs" / sweep_file, search)
    again = load_sweep_file(printed)
    assert (again.pruner, again.sampler) == ("halving", "random") and not run_dir.exists()
    assert {**again.to_json(), "search": original.search} == {
        **original.to_json(),
        "pruner": "halving",
        "sampler": "random",
    }


def test_pruners_are_median_and_successive_halving(tmp_path):
    spec = load_sweep_file(REPO / "configs" / "sweep_ecg.yaml", "cnn1d_gru")
    assert isinstance(build_pruner(spec), optuna.pruners.MedianPruner)
    spec.pruner = "halving"
    assert isinstance(build_pruner(spec), optuna.pruners.SuccessiveHalvingPruner)
    spec.pruner_args = {"halving": {"reduction_fctor": 4}}
    with pytest.raises(ConfigError, match="pruner_args.halving"):
        build_pruner(spec)


# ---------------------------------------------------------------- claims


def test_claims_respect_live_workers_and_free_dead_or_released_ones(tmp_path):
    folder = SweepFolder(tmp_path)
    claims = TrialClaims(folder, stale_after_s=60)
    me, other = WorkerIdentity.current(), WorkerIdentity.current()
    claims.take(0, other, resumed=False)  # same host, a live process (ours)
    assert claims.owner_state(0, me) == "alive" and claims.owner_state(0, other) == "mine"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    claims.take(1, WorkerIdentity("w-dead", socket.gethostname(), gone.pid, 0.0), resumed=False)
    assert claims.owner_state(1, me) == "dead"
    claims.take(2, WorkerIdentity("w-remote", "another-node", 1, None), resumed=False)
    assert claims.owner_state(2, me) == "remote"  # alive until its heartbeat goes stale
    old = time.time() - 120
    os.utime(claims.path(2), (old, old))
    assert claims.owner_state(2, me) == "dead"
    claims.release(0, other)
    assert claims.owner_state(0, me) == "dead"


def test_idle_worker_waits_for_a_remote_heartbeat_then_exits_or_takes_the_stale_trial(tmp_path, ecg_root):
    spec = load_sweep_file(sweep_file(tmp_path))
    folder = SweepFolder(tmp_path / "run")
    settings = prepare_sweep(folder, spec, parse_member_config(["--config", str(RECIPE), *tiny(ecg_root)]), 1, "t")
    study = load_study(folder, spec)
    study.ask()  # a worker on another node asked, then died before suggesting anything
    claims = TrialClaims(folder, settings.stale_after_s)
    claims.take(0, WorkerIdentity("w-remote", "another-node", 1, None), resumed=False)
    scheduler = Scheduler(folder, study, claims, WorkerIdentity.current(), settings)
    assert scheduler.take_next(1) == (None, True)  # N started; is that owner alive? wait and see
    later = time.time() + 5
    os.utime(claims.path(0), (later, later))
    assert scheduler.take_next(1) == (None, False)  # its heartbeat moved: alive, nothing left to do here
    stale = time.time() - settings.stale_after_s - 1
    os.utime(claims.path(0), (stale, stale))
    job, _ = scheduler.take_next(1)  # gone quiet for too long: take it over
    assert job.number == 0 and job.resumed and set(job.params) == set(SPACE)
    assert study.trials[0].params == job.params  # the params it lacked are in the study now


# ---------------------------------------------------------------- whole sweeps


@pytest.mark.slow
def test_two_local_workers_finish_the_study_and_best_config_trains(tmp_path, ecg_root):
    run = tmp_path / "run"
    args = sweep_args(
        sweep_file(tmp_path),
        run,
        ecg_root,
        4,
        "--array",
        "2",
        "--cluster",
        "local",
        "--slurm.cpus_per_task",
        "1",
        "--slurm.time_min",
        "10",
        "--slurm.signal_delay_s",
        "30",
    )
    done = subprocess.run(
        [sys.executable, "-m", "jobs.sweep", *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    table = rows(run)
    assert [int(r["number"]) for r in table] == [0, 1, 2, 3] and {r["state"] for r in table} <= FINISHED
    assert all(
        r["model.init_args.gru_hidden"] in ("8", "16") and 0.1 <= float(r["schedule.plateau_factor"]) <= 0.4
        for r in table
    )
    assert len(list((run / "logs").glob("*/*_result.pkl"))) == 2  # two submitit tasks ran
    private = [run, run / "trials", run / "trials" / "trial_0", run / "logs", *(run / "logs").iterdir()]
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in private} == {p.name: "0o700" for p in private}
    assert "| rank | trial | accuracy" in (run / "trials_top10.md").read_text()
    best = yaml.safe_load((run / "best_config.yaml").read_text())
    best_row = max((r for r in table if r["state"] == "COMPLETE"), key=lambda r: (float(r["value"]), -int(r["number"])))
    assert best["model"]["init_args"]["gru_hidden"] == int(best_row["model.init_args.gru_hidden"])
    from jobs.train import main as train_main

    assert (
        train_main(
            [
                "--config",
                str(run / "best_config.yaml"),
                "--out_dir",
                str(tmp_path / "retrain"),
                "--trainer.max_epochs",
                "1",
            ]
        )
        == 0
    )
    assert MemberFolder(tmp_path / "retrain").best_meta.exists()


def test_killed_worker_trial_is_resumed_from_its_checkpoint_by_the_next_worker(tmp_path, ecg_root):
    run = tmp_path / "run"
    args = sweep_args(
        sweep_file(tmp_path), run, ecg_root, 2, "--worker", "--trainer.max_epochs", "3", "--checkpoint.every_steps", "1"
    )
    first = subprocess.Popen(
        [sys.executable, "-m", "jobs.sweep", *args],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    progress_file = SweepFolder(run).trial(0).progress_file
    deadline = time.monotonic() + 120
    while (read_json(progress_file) or {}).get("global_step", 0) < 2:
        assert first.poll() is None and time.monotonic() < deadline, "worker ended before training a step"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    folder = SweepFolder(run)
    killed_at = read_json(progress_file)
    assert killed_at["epoch"] < 3 and killed_at["status"] == "running"
    before = load_study(folder, folder.settings().spec).trials[0]
    assert before.state == TrialState.RUNNING  # left RUNNING by the kill...

    setup_logging()  # as a worker task does: INFO lines reach the trial's train.log
    report = run_worker(folder, WorkerIdentity.current())  # ...and taken up by the next worker

    study = load_study(folder, folder.settings().spec)
    after = study.trials[0]
    assert [r.number for r in report.trials] == [0, 1]
    assert after.state.name in FINISHED and after.params == before.params
    progress = read_json(progress_file)
    assert progress["restarts"] >= 1 and progress["epoch"] == 3
    claim = json.loads((run / "trials" / "trial_0" / "claim.json").read_text())
    assert claim["resumed"] and claim["previous_worker"] not in (None, claim["worker_id"])
    assert "resuming seed" in (run / "trials" / "trial_0" / "train.log").read_text()
    assert sorted(after.intermediate_values) == [1, 2, 3]
    assert {r["state"] for r in rows(run)} <= FINISHED and len(rows(run)) == 2


def test_sigterm_saves_and_releases_the_trial(tmp_path, ecg_root):
    run = tmp_path / "run"
    args = sweep_args(sweep_file(tmp_path), run, ecg_root, 1, "--worker", "--trainer.max_epochs", "8")
    worker = subprocess.Popen(
        [sys.executable, "-m", "jobs.sweep", *args],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    claim = run / "trials" / "trial_0" / "claim.json"
    progress_file = SweepFolder(run).trial(0).progress_file
    deadline = time.monotonic() + 120
    while not progress_file.exists():  # written with the first checkpoint (end of epoch 1)
        assert worker.poll() is None and time.monotonic() < deadline, worker.stderr.read()
        time.sleep(0.05)
    assert claim.exists()
    worker.send_signal(signal.SIGTERM)
    code = worker.wait(timeout=60)
    assert code == 128 + signal.SIGTERM, worker.stderr.read()
    assert not claim.exists()  # released: any worker may resume it at once
    folder = SweepFolder(run)
    assert load_study(folder, folder.settings().spec).trials[0].state == TrialState.RUNNING
    assert read_json(progress_file)["epoch"] < 8  # saved part-way, to be resumed


def test_pruned_trials_stop_early_and_count_toward_n(tmp_path, ecg_root, monkeypatch):
    run = tmp_path / "run"
    assert jobs.sweep.main(sweep_args(sweep_file(tmp_path), run, ecg_root, 2, "--dry_run")) == 0
    assert not run.exists()
    monkeypatch.setattr("videns.sweep.study.build_pruner", lambda spec: optuna.pruners.ThresholdPruner(lower=2.0))
    assert (
        jobs.sweep.main(sweep_args(sweep_file(tmp_path), run, ecg_root, 2, "--worker", "--trainer.max_epochs", "3"))
        == 0
    )
    table = rows(run)
    assert [r["state"] for r in table] == ["PRUNED", "PRUNED"] and [r["epochs"] for r in table] == ["1", "1"]
    assert not (run / "best_config.yaml").exists()  # no COMPLETE trial to recommend
