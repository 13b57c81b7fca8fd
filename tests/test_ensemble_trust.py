"""What validation decides and test only scores: collapse flags, combinations, temperature, uncertainty, baseline.

Rules are checked on synthetic probabilities; the rest on real tiny members, two
trained normally and one on shuffled train labels.
"""

import csv
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from matplotlib.image import imread

from jobs import ensemble_eval
from tests.support.trust_run import BROKEN_SEED, GOOD_SEEDS, copy_data, npz, permute_labels, report
from videns.data import layout
from videns.ensemble.baseline import MODEL_NAME as MEAN_STD_MODEL
from videns.ensemble.calibration import brier_score, fit_temperature
from videns.ensemble.collapse import collapse_threshold, flag_members
from videns.ensemble.combine import COMBINATIONS, combine, greedy_weights, nll
from videns.ensemble.conformal import prediction_sets, set_names
from videns.ensemble.shape_baseline import MODEL_NAME as SHAPE_MODEL
from videns.ensemble.uncertainty import UNCERTAINTY_COLUMNS, item_uncertainty

pytestmark = pytest.mark.usefixtures("module_on_one_thread", "restore_log_handlers")


# ---- rules on synthetic probabilities ----------------------------------------------------------------------------


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_uncertainty_columns_match_a_direct_numpy_computation():
    rng = np.random.default_rng(0)
    member_probs = softmax(rng.normal(0, 2, size=(4, 50, 3)))  # (M, N, C)
    weights, temperature = np.array([0.5, 0.25, 0.25, 0.0]), 1.7

    got = item_uncertainty(member_probs, weights, temperature)

    tempered = softmax(np.log(member_probs) / temperature)
    probs = sum(w * p for w, p in zip(weights, tempered))
    h = lambda p: -(p * np.log(p)).sum(axis=-1)  # noqa: E731
    expected_member = sum(w * h(p) for w, p in zip(weights, tempered))
    votes = sum(w * (p.argmax(axis=1) == probs.argmax(axis=1)) for w, p in zip(weights, member_probs))
    np.testing.assert_allclose(combine(member_probs, weights, temperature), probs, atol=1e-12)
    np.testing.assert_allclose(got["max_probability"], probs.max(axis=1), atol=1e-12)
    np.testing.assert_allclose(got["predictive_entropy"], h(probs), atol=1e-12)
    np.testing.assert_allclose(got["expected_member_entropy"], expected_member, atol=1e-12)
    np.testing.assert_allclose(got["mutual_information"], h(probs) - expected_member, atol=1e-12)
    np.testing.assert_allclose(got["member_agreement"], votes, atol=1e-12)
    assert (got["mutual_information"] > 1e-3).any() and (got["member_agreement"] < 1).any()  # members disagree


def calibrated_case(num_items: int = 20_000, num_classes: int = 4, seed: int = 0):
    """Probabilities and labels drawn from exactly those probabilities: calibrated by construction."""
    rng = np.random.default_rng(seed)
    probs = softmax(rng.normal(0, 1.5, size=(num_items, num_classes)))
    labels = np.array([rng.choice(num_classes, p=p) for p in probs])
    return probs, labels


def test_temperature_is_about_one_when_already_calibrated():
    probs, labels = calibrated_case()
    assert fit_temperature(probs[None], np.ones(1), labels) == pytest.approx(1.0, abs=0.05)


def test_fitted_temperature_undoes_overconfidence_and_lowers_nll():
    probs, labels = calibrated_case()
    sharpened = softmax(3.0 * np.log(probs))  # the same ranking, three times as sharp
    temperature = fit_temperature(sharpened[None], np.ones(1), labels)
    assert temperature == pytest.approx(3.0, rel=0.05)
    after = combine(sharpened[None], np.ones(1), temperature)
    assert nll(labels, after) < nll(labels, sharpened) - 0.1
    assert brier_score(labels, after) < brier_score(labels, sharpened)


def test_greedy_prefers_the_better_member_and_never_loses_to_the_best_one_on_validation():
    probs, labels = calibrated_case(num_items=2000)
    rng = np.random.default_rng(1)
    noise = softmax(rng.normal(0, 1.5, size=probs.shape))
    members = np.stack([noise, probs, 0.5 * probs + 0.5 * noise])
    weights = greedy_weights(members, labels)
    assert weights.sum() == pytest.approx(1.0) and weights[1] > weights[0] and weights[1] >= 0.5
    assert nll(labels, combine(members, weights)) <= min(nll(labels, m) for m in members) + 1e-12


def probs_with_accuracies(accuracies: list[float], num_items: int = 200, num_classes: int = 4):
    """Member probabilities that are right on exactly the given share of balanced labels."""
    labels = np.arange(num_items) % num_classes
    members = []
    for accuracy in accuracies:
        predicted = labels.copy()
        wrong = np.arange(num_items) >= round(accuracy * num_items)
        predicted[wrong] = (labels[wrong] + 1) % num_classes
        members.append(np.eye(num_classes)[predicted] * 0.7 + 0.3 / num_classes)
    return np.stack(members), labels


@pytest.mark.parametrize(
    "accuracies, flagged",
    [
        ([0.92, 0.92, 0.93, 0.255, 0.745], [3, 4]),  # the published ensemble's two collapsed members
        ([0.92, 0.92, 0.727], [2]),  # the reference ensemble: one member stuck at 72.7%
        ([0.90, 0.88, 0.91, 0.89, 0.86], []),  # a normal spread is not a collapse
        ([0.90, 0.25, 0.90], [1]),  # at chance with 4 balanced classes
    ],
)
def test_collapse_rule_flags_far_below_median_or_majority(accuracies, flagged):
    member_probs, labels = probs_with_accuracies(accuracies)
    flags = flag_members(list(range(len(accuracies))), member_probs, labels)
    assert [f.seed for f in flags if f.flagged] == flagged
    assert all(f.reason for f in flags if f.flagged) and not any(f.reason for f in flags if not f.flagged)
    assert collapse_threshold(np.array([0.9, 0.9, 0.9])) == pytest.approx(0.85)


# ---- real tiny members ----------------------------------------------------------------------------------------------


def test_member_trained_on_shuffled_labels_is_flagged_and_left_out_of_mean_unflagged(trust_run: Path):
    rep = report(trust_run)
    flags = {f["seed"]: f for f in rep["flags"]}
    assert flags[BROKEN_SEED]["flagged"] and "validation accuracy" in flags[BROKEN_SEED]["reason"]
    assert not any(flags[s]["flagged"] for s in GOOD_SEEDS)
    weights = rep["combinations"]["mean_unflagged"]["weights"]
    assert weights[str(BROKEN_SEED)] == 0 and weights[str(GOOD_SEEDS[0])] == pytest.approx(0.5)
    # The default `mean` still averages it in, and says so.
    assert rep["combination"]["chosen"] == "mean" and rep["flagged_in_combination"] == [BROKEN_SEED]
    markdown = (trust_run / "ensemble" / "report.md").read_text()
    assert f"| {BROKEN_SEED} |" in markdown and "**flagged**" in markdown and "mean_unflagged" in markdown


def test_selection_and_temperature_never_read_test_labels(trust_run: Path, trust_data: Path, tmp_path: Path):
    permuted = copy_data(trust_data, tmp_path / "permuted", "test", permute_labels(1))
    run = tmp_path / "run"
    shutil.copytree(trust_run, run, symlinks=True)
    assert ensemble_eval.main(["--run_dir", str(run), "--data_root", str(permuted), "--combine", "greedy"]) == 0

    before, after = report(trust_run), report(run)
    for name in COMBINATIONS:
        assert after["combinations"][name]["weights"] == before["combinations"][name]["weights"]
        assert after["combinations"][name]["temperature"] == before["combinations"][name]["temperature"]
    assert after["flags"] == before["flags"]
    assert after["combinations"]["mean"]["test"]["accuracy"] != before["combinations"]["mean"]["test"]["accuracy"]
    # The sets under permuted test labels are those computed from validation and test features alone.
    pred = npz(trust_run)
    weights = np.array([after["combinations"]["greedy"]["weights"][str(s)] for s in pred["seeds"]])
    sets = prediction_sets(
        combine(pred["val_member_probs"], weights),
        pred["val_labels"],
        combine(pred["member_probs"], weights),
        after["conformal"]["coverage_requested"],
    )
    with open(run / "ensemble" / "predictions.csv", newline="") as handle:
        assert [row["prediction_set"] for row in csv.DictReader(handle)] == set_names(sets, after["class_names"])


def test_report_shows_every_combination_calibration_and_the_baseline(trust_run: Path):
    rep = report(trust_run)
    pred = npz(trust_run)
    assert set(rep["combinations"]) == set(COMBINATIONS)
    for _name, entry in rep["combinations"].items():
        weights = np.array(list(entry["weights"].values()))
        assert weights.sum() == pytest.approx(1.0) and "accuracy" in entry["test"] and entry["temperature"] > 0
    temperature = rep["calibration"]["temperature"]
    val = rep["calibration"]["validation"]
    assert val["after"]["nll"] <= val["before"]["nll"] + 1e-12
    val_probs = combine(pred["val_member_probs"], pred["weights"])
    assert val["before"]["nll"] == pytest.approx(nll(pred["val_labels"], val_probs))
    np.testing.assert_allclose(
        pred["calibrated_probs"], combine(pred["member_probs"], pred["weights"], temperature), atol=1e-12
    )
    np.testing.assert_allclose(pred["ensemble_probs"], pred["member_probs"].mean(axis=0), atol=1e-12)
    assert float(pred["temperature"]) == temperature
    assert [b["model"] for b in rep["baselines"]] == [MEAN_STD_MODEL, SHAPE_MODEL]
    assert all(0 <= b["accuracy"] <= 1 and b["train_items"] == 240 for b in rep["baselines"])
    baseline = rep["baseline"]
    assert baseline["accuracy"] == max(b["accuracy"] for b in rep["baselines"])
    markdown = (trust_run / "ensemble" / "report.md").read_text()
    beats = rep["ensemble"]["accuracy"] > baseline["accuracy"]
    assert (
        f"The ensemble ({rep['ensemble']['accuracy']:.4f} test accuracy) {'beats' if beats else 'does NOT beat'} "
        f"the strongest baseline, {baseline['model']} ({baseline['accuracy']:.4f})" in markdown
    )
    for section in (
        "Combinations",
        "Calibration",
        "Prediction sets",
        "Selective prediction",
        "Baselines",
        "Most uncertain test items",
        "Most confidently wrong",
    ):
        assert f"## {section}" in markdown
    png = trust_run / "ensemble" / "reliability.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and imread(png).shape[0] > 100


def test_predictions_csv_holds_calibrated_probabilities_and_uncertainty(trust_run: Path):
    rep, pred = report(trust_run), npz(trust_run)
    with open(trust_run / "ensemble" / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = rep["class_names"]
    assert len(rows) == rep["num_items"] and [int(r["item"]) for r in rows] == list(range(len(rows)))
    probs = np.array([[float(r[f"prob_{n}"]) for n in names] for r in rows])
    np.testing.assert_allclose(probs, pred["calibrated_probs"], atol=1e-12)
    assert [r["true_class"] for r in rows] == [names[i] for i in pred["labels"]]
    assert [r["predicted_class"] for r in rows] == [names[i] for i in probs.argmax(axis=1)]
    expected = item_uncertainty(pred["member_probs"], pred["weights"], rep["calibration"]["temperature"])
    for key in UNCERTAINTY_COLUMNS:
        np.testing.assert_allclose([float(r[key]) for r in rows], expected[key], atol=1e-12)


def test_baseline_features_are_mean_and_std_over_real_frames_only(tmp_path: Path):
    from videns.ensemble.baseline import summary_features, train_indices

    rng = np.random.default_rng(0)
    lengths = np.array([3, 7, 1, 5])
    features = rng.normal(size=(4, 7, 2)).astype(np.float32)
    features[0, 3:] = 1e6  # padding that a reader ignoring num_frames would average in
    path = tmp_path / "split.h5"
    with h5py.File(path, "w") as f:
        f[layout.FEATURES], f[layout.NUM_FRAMES], f[layout.LABELS] = features, lengths.astype(np.int32), np.arange(4)
    x, y = summary_features(path)
    expected = np.stack(
        [
            np.concatenate([features[i, :n].astype(np.float64).mean(0), features[i, :n].astype(np.float64).std(0)])
            for i, n in enumerate(lengths)
        ]
    )
    np.testing.assert_allclose(x, expected, rtol=1e-10)
    assert y.tolist() == [0, 1, 2, 3]
    draw = train_indices(50_000, cap=100, seed=0)
    assert len(draw) == 100 and len(set(draw.tolist())) == 100 and (draw == train_indices(50_000, 100, 0)).all()


def test_missing_validation_split_is_one_line_and_the_report_is_kept(
    trust_run: Path, trust_data: Path, tmp_path: Path, capsys
):
    data = tmp_path / "no_val"
    shutil.copytree(trust_data, data)
    layout.split_path(data, "val").unlink()
    run = tmp_path / "run"
    shutil.copytree(trust_run, run, symlinks=True)
    before = (run / "ensemble" / "report.json").read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        ensemble_eval.main(["--run_dir", str(run), "--data_root", str(data)])
    assert exit_info.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("jobs.ensemble_eval: error: ") and "val_features_multiscale.h5: file not found" in line
    assert (run / "ensemble" / "report.json").read_bytes() == before
