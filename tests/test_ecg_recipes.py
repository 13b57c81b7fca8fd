"""The ECG recipes: they hold the best published heartbeat settings and train on converted beats."""

from pathlib import Path

import pytest

from tests.support.ecg_data import TRAIN_COUNTS, tiny
from videns.config import parse_member_config
from videns.folders import MemberFolder
from videns.io import read_json
from videns.member.train import train_member

REPO = Path(__file__).resolve().parents[1]
RECIPES = {"cnn1d_gru": REPO / "configs" / "ecg_cnn1d_gru.yaml", "cnn2d": REPO / "configs" / "ecg_cnn2d.yaml"}
# The best published configurations (30 epochs, the oversampled set).
PUBLISHED_BEST = {
    "cnn1d_gru": {
        "trainer.batch_size": 32,
        "model.init_args.hidden_dim": 64,
        "model.init_args.dropout": 0.4,
        "model.init_args.gru_layers": 2,
        "model.init_args.num_blocks": 5,
        "schedule.plateau_factor": 0.2,
        "model.init_args.gru_hidden": 256,
        "data.balance": "oversample",
    },
    "cnn2d": {
        "trainer.batch_size": 16,
        "model.init_args.hidden_dim": 128,
        "model.init_args.dropout": 0.3,
        "model.init_args.num_blocks": 1,
        "schedule.plateau_factor": 0.2,
        "data.balance": "oversample",
        "model.init_args.image_shape": [16, 12],
    },
}
MODEL_TINY = {"cnn1d_gru": ["--model.init_args.gru_hidden", "8"], "cnn2d": ["--model.init_args.channels", "8"]}


pytestmark = pytest.mark.usefixtures("one_thread")


def dotted(tree: dict, key: str):
    for part in key.split("."):
        tree = tree[part]
    return tree


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_holds_the_seed_best_settings(name):
    cfg = parse_member_config(["--config", str(RECIPES[name])])
    for key, value in PUBLISHED_BEST[name].items():
        assert dotted(cfg.resolved, key) == value, key
    assert cfg.schedule.name == "plateau" and cfg.trainer.max_epochs == 30 and cfg.data.oversample_target == "majority"
    assert not cfg.loss.class_alpha  # the oversampled data is balanced already; weights would do it twice


@pytest.mark.parametrize("balance", ["oversample", "smote"])
@pytest.mark.parametrize("name", RECIPES)
def test_recipe_trains_on_converted_beats(name, balance, ecg_root, tmp_path):
    cfg = parse_member_config(
        [
            "--config",
            str(RECIPES[name]),
            *tiny(ecg_root, "--data.balance", balance),
            "--out_dir",
            str(tmp_path / "member"),
            *MODEL_TINY[name],
        ]
    )
    outcome = train_member(cfg)
    assert outcome.status == "finished" and outcome.epoch == 2
    progress = MemberFolder(tmp_path / "member").progress()
    # oversample: every class at oversample_target (16); smote: every class at the majority's train count
    per_class = 16 if balance == "oversample" else _train_majority(ecg_root)
    assert progress["batches_per_epoch"] == -(-5 * per_class // 16)
    history = [line for line in MemberFolder(tmp_path / "member").history.read_text().splitlines() if line]
    assert len(history) == 2
    best = read_json(MemberFolder(tmp_path / "member").best_meta)
    assert 0.0 <= best["val_metrics"]["balanced_accuracy"] <= 1.0


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_data_section_keeps_a_small_table_its_size(name, ecg_root, tmp_path, caplog):
    """The recipe's data settings as shipped: an epoch is the classes times the majority count, not 5 x 55,000."""
    cfg = parse_member_config(
        [
            "--config",
            str(RECIPES[name]),
            "--data.root",
            str(ecg_root),
            "--model.init_args.hidden_dim",
            "8",
            "--model.init_args.num_blocks",
            "1",
            *MODEL_TINY[name],
            "--trainer.max_epochs",
            "1",
            "--trainer.progress",
            "off",
            "--out_dir",
            str(tmp_path / "member"),
        ]
    )
    with caplog.at_level("WARNING", logger="videns.data.rebalance"):
        assert train_member(cfg).status == "finished"
    progress = MemberFolder(tmp_path / "member").progress()
    batch = cfg.trainer.batch_size
    assert progress["batches_per_epoch"] == -(-5 * _train_majority(ecg_root) // batch)
    assert not [r for r in caplog.records if "larger" in r.getMessage()]


def test_cnn2d_image_shape_needing_another_length_stops_the_member_at_its_start(tmp_path):
    from tests.test_convert import sine_beats, write_csv
    from videns.data.tabular import convert_tables
    from videns.errors import ConfigError

    beats = write_csv(tmp_path / "beats.csv", *sine_beats(60))
    convert_tables(beats, beats, tmp_path / "h5")  # each table keeps its 187 samples
    cfg = parse_member_config(
        [
            "--config",
            str(RECIPES["cnn2d"]),
            *tiny(tmp_path / "h5"),
            *MODEL_TINY["cnn2d"],
            "--out_dir",
            str(tmp_path / "member"),
        ]
    )
    with pytest.raises(ConfigError) as raised:
        train_member(cfg)
    message = str(raised.value)
    assert "\n" not in message and "model.image_shape [16, 12]" in message
    assert "needs items of 192 values" in message and "hold 187" in message and "--pad_to 192" in message
    assert not (tmp_path / "member").exists()  # nothing started


def _train_majority(ecg_root: Path) -> int:
    import h5py
    import numpy as np

    with h5py.File(ecg_root / "train_features_multiscale.h5", "r") as f:
        counts = np.bincount(f["labels"][()])
    assert counts.argmax() == 0 and counts.max() < TRAIN_COUNTS[0]  # val was drawn from train
    return int(counts.max())
