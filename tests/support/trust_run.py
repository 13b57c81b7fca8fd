"""A small run to judge an ensemble by: two tiny members trained normally and one on shuffled train labels.

The fixtures last the whole test run (tests/conftest.py registers them), so the members train once for every
module that evaluates, combines or applies them.
"""

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from videns.data import layout
from videns.data.demo import write_demo_data

GOOD_SEEDS, BROKEN_SEED = (1, 2), 3


@pytest.fixture(scope="session")
def trust_data(tmp_path_factory) -> Path:
    """Short sequences (16-40 frames): tiny members learn them in 8 epochs."""
    root = tmp_path_factory.mktemp("trust_data")
    write_demo_data(root, num_videos=400, feature_dim=16, min_frames=16, max_frames=40, seed=0)
    return root


def copy_data(root: Path, dst: Path, edit_split: str, edit) -> Path:
    shutil.copytree(root, dst)
    with h5py.File(layout.split_path(dst, edit_split), "a") as f:
        edit(f)
    return dst


def permute_labels(seed: int):
    def edit(f: h5py.File) -> None:
        labels = f[layout.LABELS][()]
        f[layout.LABELS][...] = np.random.default_rng(seed).permutation(labels)

    return edit


@pytest.fixture(scope="session")
def trust_run(trust_data: Path, tmp_path_factory) -> Path:
    """Two members trained normally and one on shuffled train labels; evaluated once with the defaults."""
    base = tmp_path_factory.mktemp("trust_run")
    shuffled = copy_data(trust_data, base / "shuffled_data", "train", permute_labels(0))
    run = base / "run"
    roots = {**{seed: trust_data for seed in GOOD_SEEDS}, BROKEN_SEED: shuffled}
    from jobs import ensemble_eval, train
    from tests.conftest import tiny_member_args

    for seed, root in roots.items():
        assert (
            train.main(
                tiny_member_args(
                    root,
                    run / "members" / f"seed_{seed}",
                    "--seed",
                    str(seed),
                    "--trainer.max_epochs",
                    "8",
                    "--optimizer.lr",
                    "1e-2",
                    "--schedule.t0_epochs",
                    "8",
                )
            )
            == 0
        )
    assert ensemble_eval.main(["--run_dir", str(run), "--data_root", str(trust_data)]) == 0
    return run


def report(run: Path) -> dict:
    return json.loads((run / "ensemble" / "report.json").read_text())


def npz(run: Path) -> dict[str, np.ndarray]:
    with np.load(run / "ensemble" / "predictions.npz", allow_pickle=False) as data:
        return {key: data[key] for key in data.files}
