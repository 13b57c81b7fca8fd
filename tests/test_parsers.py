"""One parser per command: flags that depend on other flags are resolved on the parsed command line, not by
editing it, so what the user typed wins wherever it stands, and odd values reach their options intact.

Each command runs as its ``main`` would from a shell; dry runs and ``--print_config`` write nothing.
"""

import importlib
import re
from pathlib import Path

import pytest
import yaml

import jobs.launch
from tests.conftest import REPO

CODE_LAYERS = ("jobs", "slurm")
ENTRY_POINTS = sorted(p.stem for p in (REPO / "jobs").glob("*.py") if p.stem != "__init__")


def dry_run(capsys, demo_root: Path, run_dir: Path, *extra: str) -> str:
    args = [
        "--config",
        str(REPO / "configs" / "demo.yaml"),
        "--data.root",
        str(demo_root),
        "--cluster",
        "local",
        "--run_dir",
        str(run_dir),
        "--dry_run",
        *extra,
    ]
    assert jobs.launch.main(args) == 0
    return capsys.readouterr().out


def sbatch(script: str, key: str) -> str:
    return re.search(rf"^#SBATCH --{key}=(\S+)$", script, re.MULTILINE).group(1)


@pytest.mark.parametrize("order", ["option_first", "site_first"])
def test_a_slurm_option_beats_the_site_profile_wherever_it_stands(order, capsys, demo_root, tmp_path, monkeypatch):
    monkeypatch.delenv("VIDENS_SITE", raising=False)
    pair = [["--slurm.time_min", "7"], ["--site", "local"]]
    script = dry_run(capsys, demo_root, tmp_path / "run", *sum(pair if order == "option_first" else pair[::-1], []))
    assert sbatch(script, "time") == "7"  # given
    assert sbatch(script, "partition") == "mig"  # from slurm/sites/local.yaml
    assert not (tmp_path / "run").exists()


def test_the_site_comes_from_the_environment_when_not_given(capsys, demo_root, tmp_path, monkeypatch):
    monkeypatch.setenv("VIDENS_SITE", "local")
    assert sbatch(dry_run(capsys, demo_root, tmp_path / "run"), "partition") == "mig"
    monkeypatch.delenv("VIDENS_SITE")
    assert "--partition" not in dry_run(capsys, demo_root, tmp_path / "run")


def test_a_value_that_starts_with_a_dash_reaches_its_option(capsys, demo_root, tmp_path, monkeypatch):
    """A hand split guessed from a leading dash whether a token was a value; argparse knows which options take one."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        jobs.launch.main(
            [
                "--config",
                str(REPO / "configs" / "demo.yaml"),
                "--data.root=-weird-name",
                "--site",
                "local",
                "--cluster",
                "local",
                "--run_dir",
                str(tmp_path / "run"),
                "--dry_run",
            ]
        )
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and f"data.root {tmp_path / '-weird-name'} lacks" in err, err


def test_a_negative_number_is_a_value(capsys, demo_root, tmp_path):
    with pytest.raises(SystemExit) as stopped:
        dry_run(capsys, demo_root, tmp_path / "run", "--slurm.time_min", "-5", "--site", "local")
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "slurm.time_min must be >= 1, got -5" in err, err


def write_fcn_run(run_dir: Path) -> None:
    """A run folder whose own config trains FCN with non-default channels, as a launch would leave it."""
    from videns.config import dump_run_config, parse_member_config
    from videns.folders import RunFolder, make_private

    cfg = parse_member_config(
        [
            "--config",
            str(REPO / "configs" / "timeseries.yaml"),
            "--model.init_args.channels",
            "[8,16,8]",
            "--model.init_args.dropout",
            "0.1",
        ]
    )
    make_private(run_dir)
    RunFolder(run_dir).config.write_text(dump_run_config(cfg))


def test_a_relaunch_applies_model_options_to_the_run_s_own_model(capsys, tmp_path):
    """Without --config, the run's own config lies beneath the command line, and --model.init_args.* refine its
    model, keeping what it set and what was not given."""
    run_dir = tmp_path / "run"
    write_fcn_run(run_dir)
    with pytest.raises(SystemExit) as stopped:
        jobs.launch.main(["--run_dir", str(run_dir), "--model.init_args.dropout", "0.3", "--print_config"])
    assert stopped.value.code == 0
    model = yaml.safe_load(capsys.readouterr().out)["model"]
    assert model["class_path"] == "videns.models.FCNClassifier"
    assert model["init_args"]["channels"] == [8, 16, 8] and model["init_args"]["dropout"] == 0.3


def test_another_model_class_on_relaunch_takes_its_own_defaults(capsys, tmp_path):
    from videns.config import model_defaults

    run_dir = tmp_path / "run"
    write_fcn_run(run_dir)
    with pytest.raises(SystemExit):
        jobs.launch.main(
            [
                "--run_dir",
                str(run_dir),
                "--model.class_path",
                "videns.models.InceptionTimeClassifier",
                "--model.init_args.depth",
                "3",
                "--print_config",
            ]
        )
    model = yaml.safe_load(capsys.readouterr().out)["model"]
    own = model_defaults("videns.models.InceptionTimeClassifier")
    assert model["init_args"]["depth"] == 3
    assert model["init_args"]["dropout"] == own["dropout"]  # not FCN's 0.1


def test_launch_help_shows_its_own_options_first_and_no_member_folder(capsys):
    with pytest.raises(SystemExit):
        jobs.launch.main(["--help"])
    help_text = capsys.readouterr().out.split("\noptions:", 1)[1]  # past the usage line
    assert help_text.index("--array") < help_text.index("--slurm.gres") < help_text.index("Member options")
    assert help_text.index("Member options") < help_text.index("--trainer.max_epochs")
    assert "--out_dir" not in help_text


def test_launch_refuses_the_member_folder_option(capsys, tmp_path):
    with pytest.raises(SystemExit) as stopped:
        jobs.launch.main(["--out_dir", str(tmp_path / "m"), "--run_dir", str(tmp_path / "run"), "--dry_run"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "--run_dir" in err and len(err.strip().splitlines()) == 1


def test_a_sweep_applies_member_options_to_its_recipe_s_model(tmp_path, capsys):
    """--model.init_args.* of a sweep refine the recipe's model (cnn1d_gru here), not the default class."""
    from jobs.sweep import PROG, build_parser
    from slurm.sweep_request import parse_request

    request, _ = parse_request(
        build_parser(),
        [
            "--config",
            str(REPO / "configs" / "sweep_ecg.yaml"),
            "--search",
            "cnn1d_gru",
            "--run_dir",
            str(tmp_path / "sweep"),
            "--model.init_args.dropout",
            "0.25",
        ],
        PROG,
    )
    assert request.member.model.class_path.endswith("CNN1DGRUClassifier")
    assert request.member.model.init_args.dropout == 0.25 and request.member_overrides


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_every_command_has_one_parser_the_reference_can_read(entry_point):
    parser = importlib.import_module(f"jobs.{entry_point}").build_parser()
    assert parser.format_help().startswith(f"usage: jobs.{entry_point}")


def test_no_command_line_is_split_by_hand():
    hits = [
        f"{path.relative_to(REPO)}:{n}"
        for layer in CODE_LAYERS
        for path in sorted((REPO / layer).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if 'startswith("--")' in line
    ]
    assert hits == []
