"""Tabular beats -> HDF5 splits: round trips, the stratified val split, and one-line errors."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from jobs.convert import main as convert_main
from videns.data import layout

SIGNAL_LEN = 187
ROOT = Path(__file__).resolve().parents[1]


def sine_beats(num_rows: int, num_classes: int = 5, length: int = SIGNAL_LEN, seed: int = 0):
    """(signal (N, length) float, targets (N,) int): class k is a sinusoid of frequency k+1, plus noise."""
    rng = np.random.default_rng(seed)
    targets = np.arange(num_rows) % num_classes
    rng.shuffle(targets)
    t = np.linspace(0.0, 1.0, length)
    phase = rng.uniform(0, 0.3, size=(num_rows, 1))
    signal = np.sin(2 * np.pi * (targets[:, None] + 1) * (t + phase)) + 0.05 * rng.standard_normal((num_rows, length))
    return signal.astype(np.float32), targets


def write_csv(path, signal, targets, columns=None, target_first=False):
    """A table with a header, signal columns c0.. and a target column."""
    columns = columns or [f"c{i}" for i in range(signal.shape[1])]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow((["target"] + columns) if target_first else (columns + ["target"]))
        for row, target in zip(signal, targets):
            cells = [repr(float(v)) for v in row]
            writer.writerow(([int(target)] + cells) if target_first else (cells + [int(target)]))
    return path


def write_beats_csv(tmp_path, name, num_rows, seed=0, **kwargs):
    return write_csv(tmp_path / name, *sine_beats(num_rows, seed=seed, **kwargs))


def write_parquet(path, signal, targets):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    data = {f"c{i}": signal[:, i] for i in range(signal.shape[1])}
    data["target"] = targets.astype(np.int64)
    pq.write_table(pa.table(data), path)
    return path


def read_split(out_dir, split):
    with h5py.File(layout.split_path(out_dir, split), "r") as f:
        return {key: f[key][()] for key in f} | {"attrs": dict(f.attrs)}


def run_convert(train, test, out_dir, *extra):
    try:
        return convert_main(["--train", str(train), "--test", str(test), "--out_dir", str(out_dir), *extra])
    except SystemExit as exit_:  # a user error: one line on stderr, exit code 2
        return exit_.code


def rows_as_set(signal):
    return {row.tobytes() for row in np.asarray(signal, dtype=np.float32)}


def check_round_trip(out_dir, train_signal, train_targets, test_signal, test_targets):
    splits = {split: read_split(out_dir, split) for split in layout.SPLITS}
    for data in splits.values():
        n = len(data[layout.LABELS])
        assert data[layout.FEATURES].shape == (n, SIGNAL_LEN, 1) and data[layout.FEATURES].dtype == np.float32
        assert data[layout.LABELS].dtype == np.int64
        assert (data[layout.NUM_FRAMES] == SIGNAL_LEN).all()
        attrs = data["attrs"]
        assert json.loads(attrs[layout.ATTR_MAPPING]) == {"N": 0, "S": 1, "V": 2, "F": 3, "Q": 4}
        assert (attrs[layout.ATTR_NUM_VIDEOS], attrs[layout.ATTR_MAX_FRAMES], attrs[layout.ATTR_FEATURE_DIM]) == (
            n,
            SIGNAL_LEN,
            1,
        )
        assert not attrs[layout.ATTR_MULTI_SCALE]
    test = splits["test"]
    np.testing.assert_array_equal(test[layout.FEATURES][:, :SIGNAL_LEN, 0], test_signal)
    np.testing.assert_array_equal(test[layout.LABELS], test_targets)
    # train + val are exactly the train rows, each once, with their own labels
    by_row = {row.tobytes(): label for row, label in zip(train_signal, train_targets)}
    seen = []
    for split in ("train", "val"):
        for row, label in zip(splits[split][layout.FEATURES][:, :SIGNAL_LEN, 0], splits[split][layout.LABELS]):
            assert by_row[row.tobytes()] == label
            seen.append(row.tobytes())
    assert sorted(seen) == sorted(by_row)
    return splits


def test_csv_round_trip_keeps_rows_labels_and_mapping(tmp_path):
    train = sine_beats(100, seed=1)
    test = sine_beats(30, seed=2)
    rc = run_convert(
        write_csv(tmp_path / "train.csv", *train),
        write_csv(tmp_path / "test.csv", *test, target_first=True),
        tmp_path / "out",
    )
    assert rc == 0
    check_round_trip(tmp_path / "out", *train, *test)


def test_parquet_round_trip_keeps_rows_labels_and_mapping(tmp_path):
    train = sine_beats(100, seed=1)
    test = sine_beats(30, seed=2)
    rc = run_convert(
        write_parquet(tmp_path / "train.parquet", *train),
        write_parquet(tmp_path / "test.parquet", *test),
        tmp_path / "out",
    )
    assert rc == 0
    check_round_trip(tmp_path / "out", *train, *test)


def test_val_is_stratified_from_train_and_disjoint_from_test(tmp_path):
    train = sine_beats(200, seed=1)
    test = sine_beats(50, seed=2)
    run_convert(
        write_csv(tmp_path / "train.csv", *train),
        write_csv(tmp_path / "test.csv", *test),
        tmp_path / "out",
        "--val_fraction",
        "0.25",
        "--seed",
        "3",
    )
    val = read_split(tmp_path / "out", "val")
    # 40 rows per class in train, so a 25% stratified draw holds exactly 10 of each
    assert np.bincount(val[layout.LABELS]).tolist() == [10] * 5
    val_rows = rows_as_set(val[layout.FEATURES][:, :SIGNAL_LEN, 0])
    assert val_rows <= rows_as_set(train[0])
    assert not val_rows & rows_as_set(test[0])


def test_val_draw_is_deterministic_by_seed(tmp_path):
    train, test = write_beats_csv(tmp_path, "train.csv", 100, seed=1), write_beats_csv(tmp_path, "test.csv", 20, seed=2)
    draws = []
    for out, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        run_convert(train, test, tmp_path / out, "--seed", seed)
        draws.append(read_split(tmp_path / out, "val")[layout.FEATURES].tobytes())
    assert draws[0] == draws[1] != draws[2]


def test_class_names_and_generic_ids_become_the_mapping(tmp_path):
    three = write_beats_csv(tmp_path, "three.csv", 30, num_classes=3)
    run_convert(three, three, tmp_path / "ids")
    assert json.loads(read_split(tmp_path / "ids", "test")["attrs"][layout.ATTR_MAPPING]) == {"0": 0, "1": 1, "2": 2}
    run_convert(three, three, tmp_path / "named", "--class_names", "a,b,c")
    assert json.loads(read_split(tmp_path / "named", "test")["attrs"][layout.ATTR_MAPPING]) == {"a": 0, "b": 1, "c": 2}


def edit_csv(path, row, column, value):
    """Set one cell (row counted from 1 after the header) of a CSV written by write_csv."""
    lines = list(csv.reader(path.open(newline="")))
    lines[row][lines[0].index(column)] = value
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(lines)


def bad_cell(value, row=3, column="c5"):
    def make(train, test):
        edit_csv(train, row, column, value)
        return train, test

    return make


def drop_column(name, in_test=False):
    def make(train, test):
        path = test if in_test else train
        lines = list(csv.reader(path.open(newline="")))
        i = lines[0].index(name)
        with path.open("w", newline="") as f:
            csv.writer(f).writerows([line[:i] + line[i + 1 :] for line in lines])
        return train, test

    return make


def rename(suffix):
    def make(train, test):
        return train.rename(train.with_suffix(suffix)), test

    return make


def header_only(train, test):
    train.write_text(train.read_text().splitlines()[0] + "\n")
    return train, test


def unseen_test_class(train, test):
    edit_csv(test, 4, "target", "7")
    return train, test


def missing(train, test):
    return train.with_name("nope.csv"), test


MALFORMED = {
    # case: (make the bad tables, what the one line must name)
    "missing file": (missing, ["nope.csv", "not found"]),
    "unknown extension": (rename(".tsv"), ["train.tsv", "extension"]),
    "no target column": (drop_column("target"), ["train.csv", "'target'"]),
    "non-numeric cell": (bad_cell("abc"), ["train.csv", "row 3", "'c5'", "non-numeric"]),
    "empty cell": (bad_cell(""), ["train.csv", "row 3", "'c5'", "non-numeric"]),
    "nan": (bad_cell("nan", row=2, column="c7"), ["train.csv", "row 2", "'c7'", "not finite"]),
    "inf": (bad_cell("-inf"), ["train.csv", "row 3", "'c5'", "not finite"]),
    "float32 overflow": (bad_cell("1e300"), ["train.csv", "row 3", "'c5'", "float32"]),
    "non-integer target": (bad_cell("1.5", row=6, column="target"), ["train.csv", "row 6", "'target'", "integer"]),
    "negative target": (bad_cell("-1", row=6, column="target"), ["train.csv", "row 6", "'target'", "negative"]),
    "test class absent from train": (unseen_test_class, ["test.csv", "row 4", "'target'", "[7]"]),
    "empty table": (header_only, ["train.csv", "no data rows"]),
    "column mismatch": (drop_column("c9", in_test=True), ["test.csv", "train.csv", "'c10'", "'c9'"]),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_malformed_table_exits_2_with_one_line_naming_file_and_cell(tmp_path, capsys, case):
    make, expected = MALFORMED[case]
    train, test = make(
        write_beats_csv(tmp_path, "train.csv", 40, seed=1), write_beats_csv(tmp_path, "test.csv", 20, seed=2)
    )
    capsys.readouterr()
    rc = run_convert(train, test, tmp_path / "out")
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1, err
    for part in expected:
        assert part in err, (part, err)
    assert not (tmp_path / "out").exists()  # rejected before anything was written


def test_pad_to_smaller_than_signal_is_rejected_naming_file(tmp_path, capsys):
    train = write_beats_csv(tmp_path, "train.csv", 40)
    rc = run_convert(train, train, tmp_path / "out", "--pad_to", "100")
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "pad_to 100" in err and "187 signal columns" in err and "train.csv" in err
    assert not (tmp_path / "out").exists()


def test_default_keeps_each_table_its_own_length_and_pad_to_pads(tmp_path):
    signal, targets = sine_beats(40, num_classes=4, length=427)
    train = write_csv(tmp_path / "long.csv", signal, targets)  # longer than the 192 the old default forced
    assert run_convert(train, train, tmp_path / "own") == 0
    own = read_split(tmp_path / "own", "train")
    assert own[layout.FEATURES].shape[1:] == (427, 1) and own["attrs"][layout.ATTR_MAX_FRAMES] == 427
    assert (own[layout.NUM_FRAMES] == 427).all()
    assert run_convert(train, train, tmp_path / "padded", "--pad_to", "500") == 0
    padded = read_split(tmp_path / "padded", "train")
    assert padded[layout.FEATURES].shape[1:] == (500, 1) and (padded[layout.NUM_FRAMES] == 427).all()
    assert not padded[layout.FEATURES][:, 427:].any()
    np.testing.assert_array_equal(padded[layout.FEATURES][:, :427], own[layout.FEATURES])


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        convert_main(["--help"])
    # one entry per option: from a line starting "  --name" to the next such line
    entries = re.split(r"\n  (?=--)", capsys.readouterr().out.split("options:", 1)[1])
    described = {entry.split()[0].rstrip(","): " ".join(entry.split()) for entry in entries if entry.startswith("--")}
    for option in ("--val_fraction", "--seed", "--pad_to", "--class_names", "--overwrite"):
        assert "default:" in described[option], described[option]
    for option in ("--train", "--test", "--out_dir"):
        assert "required" in described[option], described[option]
    assert "default: null" in described["--pad_to"]


def test_parquet_non_numeric_cell_names_row_and_column(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    signal, targets = sine_beats(20)
    data = {f"c{i}": signal[:, i] for i in range(signal.shape[1])} | {"target": targets}
    data["c2"] = [str(v) for v in signal[:, 2]]
    data["c2"][4] = "oops"
    pq.write_table(pa.table(data), tmp_path / "train.parquet")
    rc = run_convert(tmp_path / "train.parquet", tmp_path / "train.parquet", tmp_path / "out")
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "train.parquet" in err and "row 5" in err and "'c2'" in err and "oops" in err


def test_missing_pyarrow_gives_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    (tmp_path / "train.parquet").write_bytes(b"PAR1")
    rc = run_convert(tmp_path / "train.parquet", tmp_path / "train.parquet", tmp_path / "out")
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "train.parquet" in err and "pyarrow" in err


def test_existing_output_is_not_overwritten_without_flag(tmp_path, capsys):
    train, test = write_beats_csv(tmp_path, "train.csv", 40, seed=1), write_beats_csv(tmp_path, "test.csv", 20, seed=2)
    out = tmp_path / "out"
    out.mkdir()
    marker = layout.split_path(out, "val")
    marker.write_bytes(b"keep me")
    assert run_convert(train, test, out) == 2
    assert "already exists" in capsys.readouterr().err
    assert marker.read_bytes() == b"keep me"
    assert not layout.split_path(out, "train").exists()  # nothing written at all
    assert run_convert(train, test, out, "--overwrite") == 0
    assert len(read_split(out, "val")[layout.LABELS]) == 8


def test_cli_subprocess_exits_2_without_traceback(tmp_path):
    train = write_beats_csv(tmp_path, "train.csv", 20)
    edit_csv(train, 2, "c0", "x")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.convert",
            "--train",
            str(train),
            "--test",
            str(train),
            "--out_dir",
            str(tmp_path / "o"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"jobs.convert: error: {train}: row 2, column 'c0': non-numeric value 'x'"
    ]
