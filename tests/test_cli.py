"""Command lines are taken strictly: whole flag names only, typos named with the closest flag, and the right culprit.

Each entry point is called as its ``main`` would be from a shell; a refusal is
exit 2 with one line on stderr and nothing written.
"""

import importlib

import pytest

from tests.conftest import REPO, run_module

# One abbreviation of a real flag per entry point: argparse would have taken each as that flag.
ABBREVIATED = {
    "train": ["--trainer.max_epoch", "3"],
    "launch": ["--arr", "2", "--dry_run"],
    "ensemble_eval": ["--run_di", "results/x"],
    "predict": ["--overwrit"],
    "status": ["--run_di", "results/x"],
    "bench": ["--quic"],
    "sweep": ["--trial", "3", "--run_dir", "results/x"],
    "convert": ["--out_di", "results/x"],
    "make_data": ["--out_di", "results/x"],
    "check_folder": ["--fold", "results/x"],
    "gpu_check": ["--ou", "results/x"],
}


@pytest.mark.parametrize("entry_point", sorted(ABBREVIATED))
def test_no_entry_point_takes_an_abbreviated_flag(entry_point, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything written by mistake would land here
    main = importlib.import_module(f"jobs.{entry_point}").main
    with pytest.raises(SystemExit) as stopped:
        main(ABBREVIATED[entry_point])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"jobs.{entry_point}: error: command line: unrecognized argument(s) {ABBREVIATED[entry_point][0]}" in err
    assert "did you mean --" in err
    assert list(tmp_path.iterdir()) == []


def test_a_typo_is_blamed_on_the_command_line_with_the_closest_flag_not_on_the_config(tmp_path):
    result = run_module(
        "jobs.launch",
        ["--config", str(REPO / "configs" / "demo.yaml"), "--arary", "2", "--run_dir", str(tmp_path / "run")],
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "jobs.launch: error: command line: unrecognized argument(s) --arary 2 (did you mean --array?)"
    )
    assert not (tmp_path / "run").exists()


def test_a_bad_key_in_a_config_file_is_blamed_on_that_file(tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text("trainer:\n  max_epoch: 3\n")
    result = run_module("jobs.train", ["--config", str(config), "--out_dir", str(tmp_path / "member")])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"jobs.train: error: {config}: ") and "max_epoch" in result.stderr


def test_a_mistyped_data_folder_with_the_demo_config_is_refused_not_filled_with_demo_data(tmp_path):
    typo = tmp_path / "my-daat"
    for module, extra in (
        ("jobs.launch", ["--array", "1", "--cluster", "local", "--run_dir", str(tmp_path / "run")]),
        ("jobs.train", ["--out_dir", str(tmp_path / "member")]),
    ):
        result = run_module(module, ["--config", str(REPO / "configs" / "demo.yaml"), "--data.root", str(typo), *extra])
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and str(typo) in result.stderr
        assert not typo.exists()
    assert not (tmp_path / "run").exists()


def test_demo_data_is_written_into_another_folder_when_asked_for(tmp_path):
    data = tmp_path / "demo"
    result = run_module(
        "jobs.launch",
        [
            "--config",
            str(REPO / "configs" / "demo.yaml"),
            "--data.root",
            str(data),
            "--data.generate_demo",
            "true",
            "--array",
            "1",
            "--dry_run",
        ],
    )
    assert result.returncode == 0, result.stderr  # a dry run plans it, and still writes nothing
    assert not data.exists()
