"""jobs.launch --from_sweep: the K best trials of a real sweep, S seeds each, as one resumable run that grows
by seeds."""

import json
from pathlib import Path

import pytest
import yaml

import jobs.launch
import jobs.sweep
from tests.conftest import run_module
from videns.config import config_hash
from videns.data.series import write_series_data
from videns.folders import RunFolder, SweepFolder
from videns.member.checkpoint import load_best
from videns.sweep.top import best_trials

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("module_on_one_thread")]

REPO = Path(__file__).resolve().parents[1]
# Small enough that a trial takes seconds: FCN only, three learning rates, one epoch.
TINY = [
    "--model.init_args.channels",
    "[8,8,8]",
    "--trainer.max_epochs",
    "1",
    "--trainer.progress",
    "off",
    "--trainer.batch_size",
    "32",
]


@pytest.fixture(scope="module")
def series_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("series")
    write_series_data(root, num_series=150, max_length=48, seed=1)
    return root


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, series_root) -> Path:
    """A finished 3-trial sweep, run by one worker in this process."""
    tmp = tmp_path_factory.mktemp("sweep")
    spec = tmp / "sweep.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "recipe": str(REPO / "configs" / "timeseries.yaml"),
                "sampler": "random",
                "pruner": "none",
                "seed": 1,
                "space": {
                    "optimizer.lr": {"type": "categorical", "choices": [1.0e-4, 1.0e-3, 3.0e-3]},
                    "model.init_args.dropout": {"type": "float", "low": 0.0, "high": 0.3},
                },
            }
        )
    )
    run = tmp / "sweep"
    assert (
        jobs.sweep.main(
            [
                "--config",
                str(spec),
                "--trials",
                "3",
                "--run_dir",
                str(run),
                "--worker",
                "--data.root",
                str(series_root),
                *TINY,
            ]
        )
        == 0
    )
    return run


def launch(run: Path, *extra: str) -> int:
    return jobs.launch.main(["--run_dir", str(run), "--cluster", "local", "--slurm.cpus_per_task", "1", *extra])


def own_config(path: Path) -> dict:
    resolved = yaml.safe_load(path.read_text())
    resolved.pop("seed", None)
    resolved.pop("out_dir", None)
    return resolved


def test_the_top_k_trials_train_with_their_own_configs_s_seeds_each_and_grow_by_seeds_only(sweep, tmp_path):
    run = RunFolder(tmp_path / "top")
    assert launch(run.root, "--from_sweep", str(sweep), "--top_k", "2", "--seeds", "1") == 0
    top = best_trials(sweep, 2)
    recorded = json.loads(run.from_sweep_file.read_text())
    assert recorded["trials"] == [t.number for t in top]
    members = {int(seed): trial for seed, trial in recorded["members"].items()}
    assert sorted(members.values()) == sorted(t.number for t in top) and run.seeds() == list(members)
    for seed, trial in members.items():
        trained = own_config(run.member(seed).config)
        assert yaml.safe_load(run.member(seed).config.read_text())["seed"] == seed
        expected = own_config(SweepFolder(sweep).trial(trial).trial_config)
        assert config_hash(trained) == config_hash(expected), (seed, trial)  # the trial's exact settings
        assert trained["optimizer"]["lr"] == expected["optimizer"]["lr"]
    first_weights = {seed: load_best(run.member(seed))[2] for seed in members}
    selection = json.loads(run.ensemble.report_json.read_text())["library"]["selection"]  # selected, as a library
    assert selection["num_candidates"] == 2 and selection["picks"]

    assert launch(run.root, "--seeds", "2") == 0  # grown: the same trials, one more seed each
    grown = {int(seed): trial for seed, trial in json.loads(run.from_sweep_file.read_text())["members"].items()}
    assert set(members) < set(grown) and len(grown) == 4
    assert sorted(grown.values()) == sorted(2 * [t.number for t in top])
    assert {seed: load_best(run.member(seed))[2] for seed in members} == first_weights  # not retrained
    report = json.loads(run.ensemble.report_json.read_text())
    assert report["library"]["selection"]["num_candidates"] == 4
    seed_ensemble = json.dumps(report["library"]["comparisons"])
    assert "seed" in seed_ensemble  # against a seed ensemble of the best config, which now has 2 members
    for seed in set(grown) - set(members):
        assert config_hash(own_config(run.member(seed).config)) == config_hash(
            own_config(SweepFolder(sweep).trial(grown[seed]).trial_config)
        )


def test_a_member_of_a_sweep_run_resumes_from_its_checkpoint(sweep, tmp_path):
    run = RunFolder(tmp_path / "top")
    assert launch(run.root, "--from_sweep", str(sweep), "--top_k", "1", "--seeds", "1") == 0
    seed = run.seeds()[0]
    first_epoch = run.member(seed).history.read_text().splitlines()[0]
    assert launch(run.root, "--trainer.max_epochs", "2") == 0  # raised: trains on from epoch 1's checkpoint
    history = run.member(seed).history.read_text().splitlines()
    assert len(history) == 2 and history[0] == first_epoch
    assert json.loads(run.member(seed).progress_file.read_text())["restarts"] >= 1


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--config", "configs/demo.yaml"], "leave out --config"),
        (["--array", "2"], "leave out --array"),
        (["--top_k", "9"], "asks for more trials than the 3 complete ones"),
    ],
)
def test_a_mistaken_sweep_launch_is_one_line_before_anything_is_written(sweep, tmp_path, extra, words):
    run = tmp_path / "top"
    result = run_module(
        "jobs.launch", ["--from_sweep", str(sweep), "--run_dir", str(run), "--cluster", "local", *extra]
    )
    assert result.returncode == 2 and words in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not run.exists()


def test_a_grown_run_keeps_its_trials(sweep, tmp_path):
    run = tmp_path / "top"
    assert launch(run, "--from_sweep", str(sweep), "--top_k", "1", "--seeds", "1", "--dry_run") == 0
    assert not run.exists()  # a dry run writes nothing
    assert launch(run, "--from_sweep", str(sweep), "--top_k", "1", "--seeds", "1") == 0
    result = run_module("jobs.launch", ["--run_dir", str(run), "--top_k", "2", "--cluster", "local"])
    assert result.returncode == 2 and "a run grows by seeds only" in result.stderr
    result = run_module("jobs.launch", ["--run_dir", str(run), "--seeds", "0", "--cluster", "local"])
    assert result.returncode == 2 and "--seeds must be >= 1" in result.stderr
