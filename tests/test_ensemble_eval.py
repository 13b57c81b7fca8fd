"""jobs.ensemble_eval on real tiny members: averaging, metrics, skipped and refused members, TTA, outputs."""

import json
import shutil
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from matplotlib.image import imread
from sklearn import metrics as skm

from jobs import ensemble_eval, train
from tests.conftest import tiny_member_args
from videns.data import layout
from videns.data.augment import TTA_MODES
from videns.data.dataset import FeatureSplit
from videns.data.demo import write_demo_data
from videns.data.loaders import ViewItems, build_eval_loader
from videns.folders import MemberFolder
from videns.member.checkpoint import load_best
from videns.metrics import expected_calibration_error
from videns.models.class_path import build_model
from videns.training.evaluate import predict_probs

SEEDS = (1, 2)
ODD_SEED = 9
METRIC_KEYS = ("accuracy", "balanced_accuracy", "f1_weighted", "f1_macro", "nll", "ece")


pytestmark = pytest.mark.usefixtures("module_on_one_thread", "restore_log_handlers")


def train_tiny(root: Path, out_dir: Path, seed: int, epochs: int = 2) -> None:
    assert train.main(tiny_member_args(root, out_dir, "--seed", str(seed), "--trainer.max_epochs", str(epochs))) == 0


@pytest.fixture(scope="module")
def base_run(demo_root: Path, tmp_path_factory) -> Path:
    """A run with two finished tiny members (seeds 1 and 2); never evaluated in place."""
    run = tmp_path_factory.mktemp("run")
    for seed in SEEDS:
        train_tiny(demo_root, run / "members" / f"seed_{seed}", seed)
    return run


@pytest.fixture(scope="module")
def evaluated(base_run: Path, tmp_path_factory) -> Path:
    """A copy of the base run, evaluated once without TTA."""
    run = copy_run(base_run, tmp_path_factory.mktemp("evaluated") / "run")
    assert run_eval(["--run_dir", str(run)]) == 0
    return run


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def run_eval(args: list[str]) -> int:
    return ensemble_eval.main(args)


def predictions(run: Path) -> dict[str, np.ndarray]:
    with np.load(run / "ensemble" / "predictions.npz", allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def report(run: Path) -> dict:
    return json.loads((run / "ensemble" / "report.json").read_text())


def member_model(run: Path, seed: int):
    tensors, meta, _ = load_best(MemberFolder(run / "members" / f"seed_{seed}"))
    model = build_model(meta["model"], meta["data"]["feature_dim"], len(meta["data"]["class_names"]))
    model.load_state_dict(tensors)
    return model


def probs_by_hand(model, root: Path, mode: str) -> tuple[np.ndarray, np.ndarray]:
    split = FeatureSplit(layout.split_path(root, "test"))
    loader = build_eval_loader(ViewItems(split, mode), batch_size=128, num_workers=0, pin_memory=False)
    probs, labels, _ = predict_probs(model, loader, torch.device("cpu"))
    return probs, labels


def expect_one_line_error(capsys, args: list[str], *fragments: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_eval(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    line = err[-1]
    assert line.startswith("jobs.ensemble_eval: error: ") and "Traceback" not in "\n".join(err)
    for fragment in fragments:
        assert fragment in line
    return line


def test_ensemble_probs_are_the_mean_of_members_own_predictions(evaluated: Path, demo_root: Path):
    pred = predictions(evaluated)
    num_items = len(FeatureSplit(layout.split_path(demo_root, "test")))
    assert pred["member_probs"].shape == (len(SEEDS), num_items, 4)
    assert pred["seeds"].tolist() == list(SEEDS)
    np.testing.assert_allclose(pred["ensemble_probs"], pred["member_probs"].mean(axis=0), rtol=0, atol=1e-12)
    for i, seed in enumerate(SEEDS):
        own, labels = probs_by_hand(member_model(evaluated, seed), demo_root, "none")
        np.testing.assert_allclose(pred["member_probs"][i], own, atol=1e-6)
        np.testing.assert_array_equal(pred["labels"], labels)
    assert not np.allclose(pred["member_probs"][0], pred["member_probs"][1])  # two real, different members


def test_every_metric_in_the_report_matches_sklearn_on_predictions(evaluated: Path):
    pred, rep = predictions(evaluated), report(evaluated)
    labels, classes = pred["labels"], list(range(4))
    names = rep["class_names"]
    entries = [*zip(rep["members"], pred["member_probs"]), (rep["ensemble"], pred["ensemble_probs"])]
    for entry, probs in entries:
        preds = probs.argmax(axis=1)
        assert entry["accuracy"] == pytest.approx(skm.accuracy_score(labels, preds))
        assert entry["balanced_accuracy"] == pytest.approx(skm.recall_score(labels, preds, average="macro"))
        assert entry["f1_weighted"] == pytest.approx(
            skm.f1_score(labels, preds, average="weighted", labels=classes, zero_division=0)
        )
        assert entry["f1_macro"] == pytest.approx(
            skm.f1_score(labels, preds, average="macro", labels=classes, zero_division=0)
        )
        precision, recall, f1, support = skm.precision_recall_fscore_support(
            labels, preds, labels=classes, zero_division=0
        )
        for c, name in enumerate(names):
            assert entry["per_class"][name] == pytest.approx(
                {"precision": precision[c], "recall": recall[c], "f1": f1[c], "support": support[c]}
            )
        assert entry["confusion_matrix"] == skm.confusion_matrix(labels, preds, labels=classes).tolist()
        assert entry["nll"] == pytest.approx(skm.log_loss(labels, probs, labels=classes), rel=1e-6)
        assert entry["ece"] == pytest.approx(ece_by_hand(labels, probs))
    for key in ("accuracy", "f1_weighted", "balanced_accuracy", "f1_macro"):
        mean = np.mean([m[key] for m in rep["members"]])
        assert rep["mean_member"][key] == pytest.approx(mean)
        assert rep["gain_over_mean_member"][key] == pytest.approx(rep["ensemble"][key] - mean)
    assert [(m["seed"], m["restarts"]) for m in rep["members"]] == [(s, 0) for s in SEEDS]
    assert all(m["best_epoch"] in (1, 2) for m in rep["members"])
    assert rep["tta"] is False and rep["skipped"] == [] and rep["status"] == "ok"


def ece_by_hand(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE over 15 equal-width bins (right-closed), written out independently of videns.metrics."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    total = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        in_bin = (confidence > low) & (confidence <= high) if b else confidence <= high
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    assert total == pytest.approx(expected_calibration_error(labels, probs))
    return total


def test_missing_and_unfinished_members_are_reported_not_fatal(base_run: Path, tmp_path: Path):
    run = copy_run(base_run, tmp_path / "run")
    unfinished = run / "members" / "seed_3"
    shutil.copytree(run / "members" / "seed_1", unfinished, symlinks=True)
    (unfinished / "result.json").unlink()
    progress = json.loads((unfinished / "progress.json").read_text())
    (unfinished / "progress.json").write_text(json.dumps({**progress, "status": "interrupted", "seed": 3}))
    (run / "launch.json").write_text(json.dumps({"seeds": [1, 2, 3, 4]}))

    assert run_eval(["--run_dir", str(run)]) == 0

    rep = report(run)
    assert [m["seed"] for m in rep["members"]] == [1, 2]
    skipped = {s["seed"]: s["reason"] for s in rep["skipped"]}
    assert sorted(skipped) == [3, 4]
    assert skipped[3].startswith("unfinished") and "interrupted" in skipped[3]
    assert skipped[4].startswith("missing")
    assert predictions(run)["seeds"].tolist() == [1, 2]
    assert "| 4 | missing" in (run / "ensemble" / "report.md").read_text()
    resources = json.loads((run / "ensemble" / "resources.json").read_text())
    assert "seed_4" in resources["totals"]["missing_members"] and "seed_1" in resources["members"]


def test_a_member_whose_best_model_is_corrupt_is_skipped_with_the_reason(base_run: Path, tmp_path: Path):
    run = copy_run(base_run, tmp_path / "run")
    weights = (run / "members" / "seed_2" / "best").resolve() / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))

    assert run_eval(["--run_dir", str(run)]) == 0

    rep = report(run)
    assert [m["seed"] for m in rep["members"]] == [1]
    (skipped,) = rep["skipped"]
    assert skipped["seed"] == 2 and "sha256 does not match the manifest" in skipped["reason"]


def test_no_usable_member_writes_a_failed_report_and_exits_2(base_run: Path, tmp_path: Path, capsys):
    run = copy_run(base_run, tmp_path / "run")
    assert run_eval(["--run_dir", str(run)]) == 0
    (run / "launch.json").write_text(json.dumps({"seeds": [5, 6]}))

    expect_one_line_error(capsys, ["--run_dir", str(run)], "no usable member", "seed 5 missing", "seed 6 missing")

    rep = report(run)
    assert rep["status"] == "failed" and rep["members"] == [] and rep["ensemble"] is None
    assert [s["seed"] for s in rep["skipped"]] == [5, 6]
    # The earlier run's predictions no longer describe the report, so they are gone.
    assert not (run / "ensemble" / "predictions.npz").exists()
    assert "Evaluation failed" in (run / "ensemble" / "report.md").read_text()


@pytest.fixture(scope="module")
def odd_members(demo_root: Path, tmp_path_factory) -> dict[str, Path]:
    """Member folders (seed 9) trained on data with another feature dim or another class mapping."""
    base = tmp_path_factory.mktemp("odd")
    narrow = base / "data_dim8"
    write_demo_data(narrow, num_videos=120, feature_dim=8, seed=0)
    swapped = base / "data_swapped"
    shutil.copytree(demo_root, swapped)
    for split in layout.SPLITS:
        swap_first_two_classes(layout.split_path(swapped, split))
    members = {
        "feature dim": base / "dim8" / f"seed_{ODD_SEED}",
        "class mapping": base / "swapped" / f"seed_{ODD_SEED}",
    }
    train_tiny(narrow, members["feature dim"], ODD_SEED, epochs=1)
    train_tiny(swapped, members["class mapping"], ODD_SEED, epochs=1)
    return {**members, "swapped data": swapped}


def swap_first_two_classes(path: Path) -> None:
    with h5py.File(path, "a") as f:
        mapping = json.loads(f.attrs[layout.ATTR_MAPPING])
        first, second = sorted(mapping, key=mapping.get)[:2]
        mapping[first], mapping[second] = mapping[second], mapping[first]
        f.attrs[layout.ATTR_MAPPING] = json.dumps(mapping)


@pytest.mark.parametrize("kind", ["feature dim", "class mapping"])
def test_member_that_disagrees_with_the_others_is_refused(
    base_run: Path, odd_members, tmp_path: Path, kind: str, capsys
):
    run = copy_run(base_run, tmp_path / "run")
    assert run_eval(["--run_dir", str(run)]) == 0
    before = (run / "ensemble" / "report.json").read_bytes()
    shutil.copytree(odd_members[kind], run / "members" / f"seed_{ODD_SEED}", symlinks=True)

    expect_one_line_error(capsys, ["--run_dir", str(run)], f"member seed {ODD_SEED}", kind, "member seed 1")

    assert (run / "ensemble" / "report.json").read_bytes() == before  # the earlier report is untouched
    # Alone, the odd member is fine: the refusal is about mixing.
    assert run_eval(["--run_dir", str(run), "--members", str(ODD_SEED)]) == 0


def test_test_file_with_another_class_mapping_is_refused(evaluated: Path, odd_members, capsys):
    line = expect_one_line_error(
        capsys,
        ["--run_dir", str(evaluated), "--data_root", str(odd_members["swapped data"])],
        "test_features_multiscale.h5",
        "class mapping",
        "disagrees",
    )
    assert '"Flat_Content": 0' in line and '"Animation": 0' in line


def test_tta_changes_probabilities_and_averages_views_per_member(evaluated: Path, demo_root: Path, tmp_path: Path):
    run = copy_run(evaluated, tmp_path / "run")
    plain = predictions(run)
    assert run_eval(["--run_dir", str(run), "--tta"]) == 0
    pred, rep = predictions(run), report(run)

    assert rep["tta"] is True and rep["tta_modes"] == list(TTA_MODES)
    assert not np.allclose(pred["member_probs"], plain["member_probs"], atol=1e-4)
    np.testing.assert_allclose(pred["ensemble_probs"], pred["member_probs"].mean(axis=0), rtol=0, atol=1e-12)
    model = member_model(run, SEEDS[0])
    by_hand = np.mean([probs_by_hand(model, demo_root, mode)[0] for mode in TTA_MODES], axis=0)
    np.testing.assert_allclose(pred["member_probs"][0], by_hand, atol=1e-6)


def test_model_is_rebuilt_from_the_spec_saved_with_the_checkpoint(evaluated: Path, tmp_path: Path):
    run = copy_run(evaluated, tmp_path / "run")
    for seed in SEEDS:  # today's configs say something else entirely
        config = run / "members" / f"seed_{seed}" / "config.yaml"
        text = (
            config.read_text()
            .replace("hidden_dim: 16", "hidden_dim: 96")
            .replace("num_lstm_layers: 1", "num_lstm_layers: 3")
        )
        assert "hidden_dim: 96" in text
        config.write_text(text)

    assert run_eval(["--run_dir", str(run)]) == 0

    np.testing.assert_array_equal(predictions(run)["member_probs"], predictions(evaluated)["member_probs"])
    assert report(run)["members"][0]["model"]["init_args"]["hidden_dim"] == 16


def test_outputs_exist_and_pngs_are_valid(evaluated: Path, capsys):
    out = evaluated / "ensemble"
    rep = report(evaluated)
    assert set(rep["files"]) == {
        "report.json",
        "report.md",
        "predictions.npz",
        "predictions.csv",
        "reliability.png",
        "risk_coverage.png",
        "confusion_matrix.png",
        "training_curves.png",
        "resources.json",
    }
    for name in ("confusion_matrix.png", "training_curves.png", "reliability.png", "risk_coverage.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert imread(out / name).shape[0] > 100
    markdown = (out / "report.md").read_text()
    assert "| seed 1 |" in markdown and "**ensemble**" in markdown and "No member was skipped." in markdown
    resources = json.loads((out / "resources.json").read_text())
    assert sorted(resources["members"]) == [f"seed_{s}" for s in SEEDS]
    assert rep["evaluation"]["sequences_per_second"] > 0
    assert not list(out.glob(".staging-*"))


def test_summary_table_is_printed_and_members_select_a_subset(evaluated: Path, tmp_path: Path, capsys):
    run = copy_run(evaluated, tmp_path / "run")
    capsys.readouterr()
    assert run_eval(["--run_dir", str(run), "--members", "2"]) == 0
    printed = capsys.readouterr().out
    assert "seed 2" in printed and "seed 1" not in printed and "ensemble (1)" in printed
    assert all(word in printed for word in ("accuracy", "F1 weighted", "balanced acc", "NLL", "ECE"))
    assert predictions(run)["seeds"].tolist() == [2]


def test_unknown_member_seed_is_a_user_error(evaluated: Path, capsys):
    expect_one_line_error(capsys, ["--run_dir", str(evaluated), "--members", "77"], "--members", "77")


def test_missing_run_dir_is_a_user_error_and_creates_nothing(tmp_path: Path, capsys):
    expect_one_line_error(capsys, ["--run_dir", str(tmp_path / "nope")], "nope", "does not exist")
    assert not (tmp_path / "nope").exists()


def test_each_validation_and_test_item_is_read_exactly_once(evaluated: Path, tmp_path: Path, monkeypatch):
    run = copy_run(evaluated, tmp_path / "run")
    reads = Counter()
    original = FeatureSplit.__getitem__

    def counting(self, index):
        reads[(self.path.name, int(index))] += 1
        return original(self, index)

    monkeypatch.setattr(FeatureSplit, "__getitem__", counting)
    assert run_eval(["--run_dir", str(run), "--tta", "--batch_size", "7"]) == 0  # several batches, 2 members x 4 views
    rep = report(run)
    expected = {
        (layout.split_path(Path("."), split).name, i): 1
        for split, count in (("val", rep["num_val_items"]), ("test", rep["num_items"]))
        for i in range(count)
    }
    assert reads == Counter(expected)
