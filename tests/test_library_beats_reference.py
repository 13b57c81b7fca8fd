"""On small real-shaped series, the sweep-to-library path beats a plain seed ensemble of the reference recipe,
and the report says by how much."""

import json
from pathlib import Path

import pytest
import yaml

import jobs.ensemble_eval
import jobs.launch
import jobs.sweep
from videns.data.series import write_series_data
from videns.folders import library_ensemble_folder

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("module_on_one_thread")]

REPO = Path(__file__).resolve().parents[1]
EPOCHS = ["--trainer.max_epochs", "8", "--trainer.progress", "off"]
# The reference recipe as it is, shrunk only in size so that CPU epochs take a second.
SMALL_REFERENCE = [
    "--model.init_args.hidden_dim",
    "16",
    "--model.init_args.num_lstm_layers",
    "1",
    "--model.init_args.num_attention_heads",
    "2",
    "--model.init_args.head_dims",
    "[32]",
    "--trainer.batch_size",
    "16",
    "--schedule.t0_epochs",
    "8",
]


@pytest.fixture(scope="module")
def series_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("series")
    write_series_data(root, num_series=300, max_length=64, seed=2)
    return root


def test_a_library_selected_from_a_sweep_beats_a_seed_ensemble_of_the_reference_recipe(series_root, tmp_path):
    reference = tmp_path / "reference"
    assert jobs.launch.main(
        [
            "--config",
            str(REPO / "configs" / "ensemble.yaml"),
            "--array",
            "2",
            "--run_dir",
            str(reference),
            "--cluster",
            "local",
            "--slurm.cpus_per_task",
            "1",
            "--data.root",
            str(series_root),
            *SMALL_REFERENCE,
            *EPOCHS,
        ]
    ) in (0, 1)
    spec = tmp_path / "sweep.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "recipe": str(REPO / "configs" / "timeseries.yaml"),
                "sampler": "random",
                "pruner": "none",
                "seed": 0,
                "space": {
                    "optimizer.lr": {"type": "categorical", "choices": [1.0e-3, 3.0e-3]},
                    "model.init_args.dropout": {"type": "float", "low": 0.0, "high": 0.2},
                },
            }
        )
    )
    sweep = tmp_path / "sweep"
    assert (
        jobs.sweep.main(
            [
                "--config",
                str(spec),
                "--trials",
                "3",
                "--run_dir",
                str(sweep),
                "--worker",
                "--data.root",
                str(series_root),
                "--model.init_args.channels",
                "[16,32,16]",
                *EPOCHS,
            ]
        )
        == 0
    )

    assert jobs.ensemble_eval.main(["--library", str(sweep), str(reference)]) == 0
    report = json.loads(library_ensemble_folder(sweep).report_json.read_text())
    against_reference = report["library"]["comparisons"]["run_ensembles"]
    assert [Path(r["run"]).name for r in against_reference] == ["reference"]
    ours, theirs = report["library"]["comparisons"]["library_ensemble"], against_reference[0]["test"]
    assert ours["accuracy"] > theirs["accuracy"], (ours, theirs)
    points = 100 * (ours["accuracy"] - theirs["accuracy"])
    sentence = f"beats the plain 2-member ensemble of run reference by {points:.2f} points of test accuracy"
    assert sentence in against_reference[0]["statement"]
    assert sentence in library_ensemble_folder(sweep).report_md.read_text()
