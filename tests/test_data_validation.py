"""Every data problem is one clear line naming file, key and problem, before any work."""

import json
import shutil

import h5py
import numpy as np
import pytest

from tests.conftest import run_module, tiny_member_args
from videns.data import layout
from videns.data.demo import write_demo_data
from videns.data.inspect import inspect_dataset
from videns.errors import DataError


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "data"
    write_demo_data(root, num_videos=40, feature_dim=4, seed=1)
    return root


def _edit(root, split, fn):
    with h5py.File(layout.split_path(root, split), "a") as f:
        fn(f)


def _replace(f, key, values):
    del f[key]
    f.create_dataset(key, data=values)


def _error(root) -> str:
    with pytest.raises(DataError) as info:
        inspect_dataset(root)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_valid_data_reads_dims_and_classes_from_files(data_root):
    info = inspect_dataset(data_root)
    assert info.feature_dim == 4
    assert info.class_names == layout.VIDEO_CLASS_NAMES
    assert sum(info.splits["train"].class_counts) == info.splits["train"].num_items


def test_missing_file(data_root):
    layout.split_path(data_root, "val").unlink()
    assert _error(data_root) == f"{layout.split_path(data_root, 'val')}: file not found"


def test_not_hdf5(data_root):
    layout.split_path(data_root, "test").write_text("not hdf5")
    assert _error(data_root).endswith("test_features_multiscale.h5: not an HDF5 file")


@pytest.mark.parametrize("key", [layout.FEATURES, layout.LABELS, layout.NUM_FRAMES])
def test_missing_key(data_root, key):
    _edit(data_root, "train", lambda f: f.__delitem__(key))
    message = _error(data_root)
    assert "train_features_multiscale.h5" in message and f"{key}: missing dataset" in message


def test_missing_mapping(data_root):
    _edit(data_root, "val", lambda f: f.attrs.__delitem__(layout.ATTR_MAPPING))
    assert "val_features_multiscale.h5: attribute category_mapping: missing" in _error(data_root)


def test_feature_dims_disagree(data_root):
    layout.split_path(data_root, "test").unlink()
    other = data_root.parent / "other"
    write_demo_data(other, num_videos=40, feature_dim=6, seed=1)
    shutil.copy(layout.split_path(other, "test"), layout.split_path(data_root, "test"))
    message = _error(data_root)
    assert "test_features_multiscale.h5: features: feature dim 6 disagrees" in message


def test_class_mappings_disagree(data_root):
    swapped = {"Animation": 1, "Flat_Content": 0, "Gaming": 2, "Natural_Content": 3}
    _edit(data_root, "val", lambda f: f.attrs.__setitem__(layout.ATTR_MAPPING, json.dumps(swapped)))
    assert "val_features_multiscale.h5: attribute category_mapping: class mapping" in _error(data_root)


def test_labels_outside_mapping(data_root):
    def bad_labels(f):
        labels = f[layout.LABELS][()]
        labels[3] = 9
        _replace(f, layout.LABELS, labels)

    _edit(data_root, "train", bad_labels)
    message = _error(data_root)
    assert "train_features_multiscale.h5: labels: 1 label(s) outside the class mapping" in message
    assert "item 3: 9" in message


@pytest.mark.parametrize("value", [0, -2, 10_000])
def test_num_frames_out_of_range(data_root, value):
    def bad_frames(f):
        frames = f[layout.NUM_FRAMES][()]
        frames[0] = value
        _replace(f, layout.NUM_FRAMES, frames)

    _edit(data_root, "val", bad_frames)
    assert "val_features_multiscale.h5: num_frames: 1 value(s) <= 0 or > max_frames" in _error(data_root)


def test_non_finite_features(data_root):
    def poison(f):
        f[layout.FEATURES][5, 0, 1] = np.nan

    _edit(data_root, "test", poison)
    assert "test_features_multiscale.h5: features: non-finite values (NaN or inf) in item 5" in _error(data_root)


@pytest.mark.parametrize("preload_gb", [4.0, 0.0])
@pytest.mark.parametrize("split", ["train", "val"])
def test_training_refuses_non_finite_features_whether_preloaded_or_not(data_root, tmp_path, split, preload_gb):
    """Preloaded splits are checked in RAM after the one read, the others in the file: same line, no output."""
    _edit(data_root, split, lambda f: f[layout.FEATURES].__setitem__((7, 0, 0), np.inf))
    out_dir = tmp_path / "member"
    result = run_module("jobs.train", tiny_member_args(data_root, out_dir) + ["--data.preload_gb", str(preload_gb)])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert f"{split}_features_multiscale.h5: features: non-finite values (NaN or inf) in item 7" in lines[0]
    assert not out_dir.exists()  # not even a log: nothing was logged before the refusal


def test_empty_split(data_root):
    def empty(f):
        d = f[layout.FEATURES].shape[2]
        _replace(f, layout.FEATURES, np.zeros((0, 5, d), np.float32))
        _replace(f, layout.LABELS, np.zeros((0,), np.int64))
        _replace(f, layout.NUM_FRAMES, np.zeros((0,), np.int32))

    _edit(data_root, "train", empty)
    assert "train_features_multiscale.h5: features: split is empty" in _error(data_root)


def test_cli_reports_bad_data_in_one_line_and_writes_nothing(data_root, tmp_path):
    _edit(data_root, "test", lambda f: f.__delitem__(layout.LABELS))
    out_dir = tmp_path / "member"
    result = run_module("jobs.train", tiny_member_args(data_root, out_dir))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "test_features_multiscale.h5: labels: missing dataset" in lines[0]
    assert not (out_dir / "checkpoints").exists()


@pytest.mark.parametrize(
    "override, expected",
    [
        (["--optimizer.lr", "-1"], "optimizer.lr"),
        (["--trainer.patience", "-3"], "trainer.patience must be >= 0"),
        (
            ["--model.init_args.num_attention_heads", "5"],
            "model.num_attention_heads=5 must divide the attention width 32",
        ),
        (["--trainer.no_such_key", "1"], "no_such_key"),
    ],
)
def test_cli_rejects_bad_config_before_work(data_root, tmp_path, override, expected):
    out_dir = tmp_path / "member"
    result = run_module("jobs.train", tiny_member_args(data_root, out_dir, *override))
    assert result.returncode == 2
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert not (out_dir / "checkpoints").exists()
