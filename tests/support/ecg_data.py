"""Small imbalanced heartbeat tables, converted to HDF5 splits the way real ones are (jobs.convert)."""

from pathlib import Path

import numpy as np

from tests.test_convert import sine_beats, write_csv
from videns.data.tabular import convert_tables

# Class counts of the train table: imbalanced like MIT-BIH (N dominates), but tiny.
TRAIN_COUNTS = (60, 16, 16, 14, 14)


def write_ecg_data(root: Path) -> Path:
    """Write train/test CSVs (187 samples per beat) into ``root`` and convert them into ``root/h5``."""
    signal, targets = sine_beats(400, seed=0)
    keep = np.concatenate([np.flatnonzero(targets == c)[:n] for c, n in enumerate(TRAIN_COUNTS)])
    train = write_csv(root / "train.csv", signal[keep], targets[keep])
    test = write_csv(root / "test.csv", *sine_beats(30, seed=1))
    convert_tables(train, test, root / "h5", val_fraction=0.2, seed=0, pad_to=192)  # as the recipes say
    return root / "h5"


def tiny(data_root: Path, *extra: str) -> list[str]:
    """Member overrides that shrink either ECG recipe to seconds on a CPU, keeping its structure."""
    return [
        "--data.root",
        str(data_root),
        "--model.init_args.hidden_dim",
        "8",
        "--model.init_args.num_blocks",
        "1",
        "--data.oversample_target",
        "16",
        "--trainer.batch_size",
        "16",
        "--trainer.max_epochs",
        "2",
        "--trainer.eval_batch_size",
        "64",
        "--trainer.progress",
        "off",
        *extra,
    ]
