"""jobs.predict on real tiny members: reproduces ensemble_eval, needs no labels, refuses bad input in one line."""

import csv
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from jobs import predict
from tests.conftest import run_module
from tests.support.damage import damage_chunk, damage_superblock, truncate
from tests.support.trust_run import npz, report
from videns.data import layout
from videns.data.demo import write_demo_data
from videns.ensemble.combine import combine
from videns.ensemble.uncertainty import UNCERTAINTY_COLUMNS
from videns.folders import MemberFolder
from videns.member.checkpoint import load_best, save_best
from videns.models.class_path import build_model

pytestmark = pytest.mark.usefixtures("module_on_one_thread", "restore_log_handlers")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def csv_probs(rows: list[dict[str, str]], names: list[str]) -> np.ndarray:
    return np.array([[float(r[f"prob_{n}"]) for n in names] for r in rows])


def edited_copy(src: Path, dst: Path, edit) -> Path:
    shutil.copyfile(src, dst)
    with h5py.File(dst, "a") as f:
        edit(f)
    return dst


def test_predict_on_the_test_file_reproduces_ensemble_eval(trust_run: Path, trust_data: Path, tmp_path: Path, capsys):
    out = tmp_path / "test.csv"
    test_file = layout.split_path(trust_data, "test")
    assert (
        predict.main(["--run_dir", str(trust_run), "--input", str(test_file), "--out", str(out), "--progress", "bar"])
        == 0
    )
    assert "predict" in capsys.readouterr().err  # the progress bar

    rep, pred = report(trust_run), npz(trust_run)
    rows = read_csv(out)
    np.testing.assert_allclose(csv_probs(rows, rep["class_names"]), pred["calibrated_probs"], rtol=0, atol=1e-6)
    assert [r["true_class"] for r in rows] == [rep["class_names"][i] for i in pred["labels"]]
    ours = {key: np.array([float(r[key]) for r in rows]) for key in UNCERTAINTY_COLUMNS}
    theirs = read_csv(trust_run / "ensemble" / "predictions.csv")
    for key in UNCERTAINTY_COLUMNS:
        np.testing.assert_allclose(ours[key], [float(r[key]) for r in theirs], atol=1e-6)
    for key in ("prediction_set", "set_size", "probabilities"):
        assert [r[key] for r in rows] == [r[key] for r in theirs], key
    metrics = json.loads(out.with_name("test.metrics.json").read_text())
    assert metrics["combination"] == "mean" and metrics["temperature"] == rep["calibration"]["temperature"]
    assert 0 <= metrics["metrics"]["accuracy"] <= 1 and "brier" in metrics["metrics"]
    assert metrics["prediction_sets"] == rep["conformal"]["test"]


def test_another_combination_uses_its_own_weights_and_temperature(trust_run: Path, trust_data: Path, tmp_path: Path):
    out = tmp_path / "greedy.csv"
    assert (
        predict.main(
            [
                "--run_dir",
                str(trust_run),
                "--input",
                str(layout.split_path(trust_data, "test")),
                "--out",
                str(out),
                "--combine",
                "mean_unflagged",
            ]
        )
        == 0
    )
    rep, pred = report(trust_run), npz(trust_run)
    entry = rep["combinations"]["mean_unflagged"]
    weights = np.array([entry["weights"][str(s)] for s in pred["seeds"]])
    expected = combine(pred["member_probs"], weights, entry["temperature"])
    np.testing.assert_allclose(csv_probs(read_csv(out), rep["class_names"]), expected, rtol=0, atol=1e-6)
    assert json.loads(out.with_name("greedy.metrics.json").read_text())["seeds"] == [1, 2]  # the flagged one left out


def test_a_file_without_labels_or_class_mapping_gets_the_same_predictions(
    trust_run: Path, trust_data: Path, tmp_path: Path
):
    def strip(f: h5py.File) -> None:
        del f[layout.LABELS]
        del f.attrs[layout.ATTR_MAPPING]

    unlabeled = edited_copy(layout.split_path(trust_data, "test"), tmp_path / "new.h5", strip)
    out = tmp_path / "new.csv"
    assert predict.main(["--run_dir", str(trust_run), "--input", str(unlabeled), "--out", str(out)]) == 0

    rows = read_csv(out)
    assert "true_class" not in rows[0]
    np.testing.assert_allclose(
        csv_probs(rows, report(trust_run)["class_names"]), npz(trust_run)["calibrated_probs"], rtol=0, atol=1e-6
    )
    assert not (tmp_path / "new.metrics.json").exists()


def set_value(key: str, index, value):
    def edit(f: h5py.File) -> None:
        f[key][index] = value

    return edit


def replace_dataset(key: str, make):
    def edit(f: h5py.File) -> None:
        data = make(f[key][()])
        del f[key]
        f[key] = data

    return edit


def swap_mapping(f: h5py.File) -> None:
    mapping = json.loads(f.attrs[layout.ATTR_MAPPING])
    first, second = sorted(mapping, key=mapping.get)[:2]
    mapping[first], mapping[second] = mapping[second], mapping[first]
    f.attrs[layout.ATTR_MAPPING] = json.dumps(mapping)


BAD_INPUTS = {
    "non-finite": (set_value(layout.FEATURES, (5, 0, 0), np.nan), ["features", "non-finite", "item 5"]),
    "zero length": (set_value(layout.NUM_FRAMES, 3, 0), ["num_frames", "first at item 3"]),
    "too long": (set_value(layout.NUM_FRAMES, 4, 10_000), ["num_frames", "> max_frames"]),
    "lengths shape": (replace_dataset(layout.NUM_FRAMES, lambda a: a[:-1]), ["num_frames", "expected shape"]),
    "labels shape": (replace_dataset(layout.LABELS, lambda a: a[:-2]), ["labels", "expected shape"]),
    "label out of range": (set_value(layout.LABELS, 2, 9), ["labels", "outside the class mapping"]),
    "class mapping": (swap_mapping, ["category_mapping", "disagrees with the members'"]),
    "no features": (lambda f: f.__delitem__(layout.FEATURES), ["features", "missing dataset"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_nothing_is_written(trust_run: Path, trust_data: Path, tmp_path: Path, case: str):
    edit, fragments = BAD_INPUTS[case]
    bad = edited_copy(layout.split_path(trust_data, "test"), tmp_path / "bad.h5", edit)
    expect_refused(trust_run, bad, tmp_path / "out.csv", fragments)


def expect_refused(run: Path, input_file: Path, out: Path, fragments: list[str], *extra: str) -> str:
    before = sorted(out.parent.iterdir())
    done = run_module(
        "jobs.predict", ["--run_dir", str(run), "--input", str(input_file), "--out", str(out), *extra], timeout=120
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("jobs.predict: error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert sorted(out.parent.iterdir()) == before  # nothing written, nothing removed
    return lines[0]


def test_feature_size_other_than_the_members_is_refused(trust_run: Path, tmp_path: Path):
    narrow = tmp_path / "narrow"
    write_demo_data(narrow, num_videos=40, feature_dim=8, max_frames=30, seed=0)
    line = expect_refused(trust_run, layout.split_path(narrow, "test"), tmp_path / "out.csv", ["features"])
    assert "feature size 8 disagrees with the members' 16" in line


@pytest.mark.parametrize("damage", [damage_superblock, truncate, damage_chunk])
def test_a_damaged_input_file_is_one_line_naming_it(trust_run: Path, trust_data: Path, tmp_path: Path, damage):
    damaged = tmp_path / "damaged.h5"
    shutil.copyfile(layout.split_path(trust_data, "test"), damaged)
    key = damage(damaged)
    line = expect_refused(trust_run, damaged, tmp_path / "out.csv", [str(damaged)])
    assert (f": {key}: cannot read (" in line) if key else ("cannot open (" in line), line


def test_not_hdf5_and_missing_file_are_refused(trust_run: Path, tmp_path: Path):
    text = tmp_path / "notes.h5"
    text.write_text("not data")
    expect_refused(trust_run, text, tmp_path / "out.csv", [str(text), "not an HDF5 file"])
    expect_refused(trust_run, tmp_path / "nope.h5", tmp_path / "out.csv", ["nope.h5", "file not found"])


def test_existing_output_is_kept_without_overwrite(trust_run: Path, trust_data: Path, tmp_path: Path):
    out = tmp_path / "out.csv"
    out.write_text("precious\n")
    expect_refused(trust_run, layout.split_path(trust_data, "test"), out, ["out.csv", "exists", "--overwrite"])
    assert out.read_text() == "precious\n"
    assert (
        predict.main(
            [
                "--run_dir",
                str(trust_run),
                "--input",
                str(layout.split_path(trust_data, "test")),
                "--out",
                str(out),
                "--overwrite",
            ]
        )
        == 0
    )
    assert out.read_text().startswith("item,true_class,predicted_class,")


def test_run_without_an_ensemble_report_is_refused(trust_run: Path, trust_data: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(trust_run / "members", run / "members", symlinks=True)
    out_dir = tmp_path / "outputs"
    out_dir.mkdir()
    expect_refused(
        run, layout.split_path(trust_data, "test"), out_dir / "out.csv", ["report.json", "jobs.ensemble_eval"]
    )


def test_a_member_with_a_new_best_since_the_report_is_refused(trust_run: Path, trust_data: Path, tmp_path: Path):
    """A relaunch that trains on can write a new best model; the report's weights and temperature no longer fit it."""
    run = tmp_path / "run"
    shutil.copytree(trust_run, run, symlinks=True)
    seed = report(run)["members"][0]["seed"]
    folder = MemberFolder(run / "members" / f"seed_{seed}")
    tensors, meta, _ = load_best(folder)
    model = build_model(meta["model"], meta["data"]["feature_dim"], len(meta["data"]["class_names"]))
    model.load_state_dict({name: t + 1e-3 for name, t in tensors.items()})
    save_best(folder, model, {**meta, "epoch": meta["epoch"] + 1})  # as the member loop writes a later best
    out_dir = tmp_path / "outputs"
    out_dir.mkdir()
    expect_refused(
        run,
        layout.split_path(trust_data, "test"),
        out_dir / "out.csv",
        [f"member seed {seed}", folder.best_version(meta["epoch"] + 1).name, "jobs.ensemble_eval"],
    )
