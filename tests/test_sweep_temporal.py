"""configs/sweep_temporal.yaml: the reference temporal model searched on video features."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

import jobs.sweep
from videns.config import parse_member_config
from videns.data.demo import write_demo_data
from videns.folders import MemberFolder
from videns.sweep.space import apply_params
from videns.sweep.spec import load_sweep_file

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO / "configs" / "sweep_temporal.yaml"
SEARCHED = {
    "model.init_args.hidden_dim",
    "model.init_args.num_lstm_layers",
    "model.init_args.num_attention_heads",
    "model.init_args.dropout",
    "optimizer.lr",
    "optimizer.weight_decay",
    "data.augment",
    "data.balance",
}
# The shipped space's structure at a size that trains in seconds: heads still divide every width (2 x 8, 2 x 16).
TINY_SPACE = {
    "model.init_args.hidden_dim": {"type": "categorical", "choices": [8, 16]},
    "model.init_args.num_attention_heads": {"type": "categorical", "choices": [1, 2, 4]},
    "model.init_args.num_lstm_layers": {"type": "int", "low": 1, "high": 2},
    "model.init_args.dropout": {"type": "float", "low": 0.1, "high": 0.5},
    "optimizer.lr": {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True},
    "optimizer.weight_decay": {"type": "float", "low": 1.0e-4, "high": 1.0e-1, "log": True},
    "data.augment": {"type": "categorical", "choices": [True, False]},
    "data.balance": {"type": "categorical", "choices": ["none", "weighted_sampler", "oversample"]},
}
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}  # the machine's cores are shared

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    write_demo_data(root, num_videos=80, feature_dim=8, max_frames=16)
    return root


def demo_args(root: Path) -> list[str]:
    """Member overrides that shrink the reference recipe to seconds on the small demo data."""
    return [
        "--data.root",
        str(root),
        "--model.init_args.head_dims",
        "[16]",
        "--trainer.batch_size",
        "16",
        "--trainer.max_epochs",
        "2",
        "--trainer.eval_batch_size",
        "64",
        "--trainer.progress",
        "off",
    ]


def sweep_file(tmp_path: Path, space: dict) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(
        yaml.safe_dump(
            {"recipe": str(REPO / "configs" / "demo.yaml"), "sampler": "random", "pruner": "none", "space": space},
            sort_keys=False,
        )
    )
    return path


def test_shipped_space_searches_the_temporal_model_and_every_draw_is_a_valid_member(tmp_path):
    spec = load_sweep_file(SWEEP)
    assert set(spec.space) == SEARCHED and spec.recipe.name == "ensemble.yaml"
    assert spec.space["data.augment"].choices == (True, False) and "smote" not in spec.space["data.balance"].choices
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    recipe = yaml.safe_load(spec.recipe.read_text())
    for _ in range(20):
        params = study.ask(spec.space).params
        path = tmp_path / "draw.yaml"
        path.write_text(yaml.safe_dump(apply_params(recipe, params)))
        parse_member_config(["--config", str(path)])  # builds the model, whose own check refuses bad heads
        assert (2 * params["model.init_args.hidden_dim"]) % params["model.init_args.num_attention_heads"] == 0


def test_heads_that_do_not_divide_some_width_are_refused_before_anything_is_written(tmp_path, demo_root, capsys):
    space = {
        "model.init_args.hidden_dim": {"type": "categorical", "choices": [12, 10]},
        "model.init_args.num_attention_heads": {"type": "categorical", "choices": [2, 8]},
    }
    sweep = sweep_file(tmp_path, space)  # alone, each value suits the recipe (4 heads, hidden 32)
    with pytest.raises(SystemExit) as stop:
        jobs.sweep.main(
            ["--config", str(sweep), "--trials", "2", "--run_dir", str(tmp_path / "run"), *demo_args(demo_root)]
        )
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert "space.model.init_args.hidden_dim = 10 with space.model.init_args.num_attention_heads = 8" in err, err
    assert "num_attention_heads=8 must divide the attention width 20" in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_two_local_workers_run_tiny_temporal_trials_and_the_best_config_trains(tmp_path, demo_root):
    run = tmp_path / "run"
    args = [
        "--config",
        str(sweep_file(tmp_path, TINY_SPACE)),
        "--trials",
        "3",
        "--run_dir",
        str(run),
        *demo_args(demo_root),
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
    ]
    done = subprocess.run(
        [sys.executable, "-m", "jobs.sweep", *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with (run / "trials.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["state"] for r in table] == ["COMPLETE"] * 3, table
    for row in table:
        assert (2 * int(row["model.init_args.hidden_dim"])) % int(row["model.init_args.num_attention_heads"]) == 0
    best = yaml.safe_load((run / "best_config.yaml").read_text())
    assert best["model"]["class_path"].endswith("TemporalAttentionClassifier")
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
