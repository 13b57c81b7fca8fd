"""A fitted temperature is applied only where it is an honest estimate, and every probability says which it is.

Rules on synthetic probabilities with known calibration; the report on real tiny members whose
validation split is separable.
"""

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from jobs import ensemble_eval
from tests.support.trust_run import npz, report
from videns.ensemble.calibration import MIN_NLL_GAIN, choose_temperature
from videns.ensemble.combine import combine, nll
from videns.ensemble.conformal import prediction_sets, set_metrics

pytestmark = pytest.mark.usefixtures("module_on_one_thread", "restore_log_handlers")


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def drawn(num_items: int, sharpness: float, seed: int, num_classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from calibrated probabilities, returned ``sharpness`` times as sharp (1: calibrated)."""
    rng = np.random.default_rng(seed)
    probs = softmax(rng.normal(0, 1.5, size=(num_items, num_classes)))
    labels = (probs.cumsum(axis=1) < rng.random((num_items, 1))).sum(axis=1)
    return softmax(sharpness * np.log(probs))[None], labels


def test_an_overconfident_combination_is_scaled_and_new_items_gain():
    val_probs, val_labels = drawn(2000, sharpness=3.0, seed=0)
    test_probs, test_labels = drawn(2000, sharpness=3.0, seed=1)
    choice = choose_temperature(val_probs, np.ones(1), val_labels)
    assert choice.applied and choice.temperature == pytest.approx(3.0, rel=0.1)
    assert choice.out_of_fold_nll["scaled"] < (1 - MIN_NLL_GAIN) * choice.out_of_fold_nll["raw"]
    assert (
        nll(test_labels, combine(test_probs, np.ones(1), choice.temperature))
        < nll(test_labels, combine(test_probs, np.ones(1))) - 0.1
    )


def test_a_calibrated_combination_keeps_its_raw_probabilities():
    probs, labels = drawn(300, sharpness=1.0, seed=2)
    choice = choose_temperature(probs, np.ones(1), labels)
    assert not choice.applied and choice.temperature == 1.0 and choice.fitted != 1.0
    assert "out of fold" in choice.reason and "less than the 1% gain" in choice.reason


def test_a_fit_at_either_bound_is_not_applied_and_says_which():
    labels = np.arange(200) % 4
    separable = np.eye(4)[labels] * 0.6 + 0.1  # right on every item, never sure
    choice = choose_temperature(separable[None], np.ones(1), labels)
    assert not choice.applied and choice.temperature == 1.0 and choice.fitted < 0.06
    assert "lower bound" in choice.reason and "separable" in choice.reason
    noise = softmax(np.random.default_rng(3).normal(0, 3, size=(1, 200, 4)))  # no signal at all
    choice = choose_temperature(noise, np.ones(1), labels)
    assert not choice.applied and choice.fitted > 19 and "upper bound" in choice.reason
    assert "separable" not in choice.reason


def test_on_separable_validation_the_report_uses_raw_probabilities_and_says_why(trust_run: Path, tmp_path: Path):
    """The two good members are right on every validation item: greedy picks them, and its fit runs to T -> 0."""
    run = tmp_path / "run"
    shutil.copytree(trust_run, run, symlinks=True)
    assert ensemble_eval.main(["--run_dir", str(run), "--combine", "greedy", "--coverage", "0.8", "--mondrian"]) == 0
    rep, pred = report(run), npz(run)
    assert rep["conformal"]["coverage_requested"] == 0.8 and rep["conformal"]["mondrian"]
    weights = np.array([rep["combinations"]["greedy"]["weights"][str(s)] for s in pred["seeds"]])
    sets = prediction_sets(
        combine(pred["val_member_probs"], weights),
        pred["val_labels"],
        combine(pred["member_probs"], weights),
        0.8,
        mondrian=True,
    )
    assert rep["conformal"]["test"] == set_metrics(sets, pred["labels"], rep["class_names"])
    calibration = rep["calibration"]
    assert not calibration["applied"] and calibration["temperature"] == 1.0 and calibration["fitted"] < 0.06
    assert "lower bound" in calibration["reason"] and calibration["probabilities"] == "raw (T = 1)"
    np.testing.assert_array_equal(pred["calibrated_probs"], pred["ensemble_probs"])
    markdown = (run / "ensemble" / "report.md").read_text()
    assert "not applied (T = 1): the fit stopped at the lower bound" in markdown
    assert "## Most uncertain test items (probabilities: raw (T = 1))" in markdown
    with open(run / "ensemble" / "predictions.csv", newline="") as handle:
        assert {row["probabilities"] for row in csv.DictReader(handle)} == {"raw (T = 1)"}


def test_an_applied_temperature_is_named_beside_its_probabilities(trust_run: Path):
    """The default mean averages in the collapsed member: under-confident, and the fit pays out of fold."""
    rep = report(trust_run)
    calibration = rep["calibration"]
    assert calibration["applied"] and calibration["temperature"] == calibration["fitted"] != 1.0
    label = f"temperature-scaled (T = {calibration['temperature']:.3f})"
    assert calibration["probabilities"] == label
    markdown = (trust_run / "ensemble" / "report.md").read_text()
    assert f"## Most uncertain test items (probabilities: {label})" in markdown
    with open(trust_run / "ensemble" / "predictions.csv", newline="") as handle:
        assert {row["probabilities"] for row in csv.DictReader(handle)} == {label}
