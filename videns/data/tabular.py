"""Tabular beats (CSV or parquet) -> HDF5 train/val/test splits with D=1.

A table has one header row and a ``target`` column of integer class ids; every
other column is one sample of the signal, in column order (MIT-BIH beats: 187).
Each item becomes ``features[i, :, 0]``, zero-padded to ``pad_to`` steps, with
``num_frames[i]`` = the number of signal columns.

The validation split is drawn stratified from train, never from test (a model
chosen on its test set reports optimistic accuracies).
Every table is checked before anything is written; a problem raises ``DataError``
or ``ConfigError`` with one line naming the file, the row/column and the problem.
Rows are counted from 1, after the header.
"""

import csv
import json
import logging
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from videns.data import layout
from videns.data.reading import reading
from videns.errors import ConfigError, DataError
from videns.io import replacing

log = logging.getLogger(__name__)

TARGET_COLUMN = "target"
MITBIH_CLASS_NAMES = ("N", "S", "V", "F", "Q")
CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class Table:
    """One checked table."""

    path: Path
    columns: tuple[str, ...]  # signal column names, in signal order (target left out)
    signal: np.ndarray  # float32 (N, C), all finite
    targets: np.ndarray  # int64 (N,), all >= 0


def read_table(path: Path | str) -> Table:
    """Read and check a CSV or parquet table; raises DataError naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        header, values = _read_csv(path)
    elif suffix in PARQUET_SUFFIXES:
        header, values = _read_parquet(path)
    else:
        raise DataError(f"{path}: unknown extension {suffix!r}; expected .csv, .parquet or .pq")
    return _checked_table(path, header, values)


def _read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """Header and all cells as float64 (N, columns); exact bad cell on failure."""
    with reading(path, "CSV text"), path.open(newline="") as f:
        header = next(csv.reader(f), None)
    if header is None:
        raise DataError(f"{path}: empty file, no header row")
    header = [name.strip() for name in header]
    try:
        with warnings.catch_warnings():  # numpy warns on a header-only file; we raise below
            warnings.simplefilter("ignore", UserWarning)
            values = np.loadtxt(
                path, delimiter=",", skiprows=1, ndmin=2, comments=None, quotechar='"', dtype=np.float64
            )
    except ValueError:
        with reading(path, "CSV text"):  # text that is not UTF-8 fails here too
            raise _first_bad_csv_cell(path, header) from None
    if values.size and values.shape[1] != len(header):
        raise _first_bad_csv_cell(path, header)
    return header, values


def _first_bad_csv_cell(path: Path, header: list[str]) -> DataError:
    """Slow pass, only after the fast parser failed: find the row and column to name."""
    with path.open(newline="") as f:
        rows = csv.reader(f)
        next(rows)
        row = 0
        for cells in rows:
            if not any(cell.strip() for cell in cells):
                continue  # blank lines are skipped, as the fast parser does
            row += 1
            if len(cells) != len(header):
                return DataError(f"{path}: row {row} has {len(cells)} cells, the header has {len(header)}")
            for name, cell in zip(header, cells):
                try:
                    float(cell)
                except ValueError:
                    return DataError(f"{path}: row {row}, column {name!r}: non-numeric value {cell!r}")
    return DataError(f"{path}: cannot be read as a table of numbers")


def _read_parquet(path: Path) -> tuple[list[str], np.ndarray]:
    """Header and all cells as float64 (N, columns) via pyarrow."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            f"{path}: reading parquet needs pyarrow (pip install 'videns[tabular]'), or convert the table to CSV"
        ) from None
    with reading(path, also=(pa.ArrowException,)):
        table = pq.read_table(path)
    header = [str(name) for name in table.column_names]
    columns = []
    for i, name in enumerate(header):
        with reading(path, f"column {name!r}", also=(pa.ArrowException,)):
            columns.append(_parquet_column(path, name, table.column(i)))
    values = np.column_stack(columns) if columns else np.empty((table.num_rows, 0))
    return header, values


def _parquet_column(path: Path, name: str, column) -> np.ndarray:
    """One parquet column as float64; names the first empty or non-numeric cell."""
    import pyarrow as pa

    if column.null_count:
        row = int(np.argmax(column.is_null().to_numpy(zero_copy_only=False))) + 1
        raise DataError(f"{path}: row {row}, column {name!r}: empty cell")
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return column.to_numpy().astype(np.float64)
    cells = column.to_pylist()
    for row, cell in enumerate(cells, start=1):
        try:
            float(cell)
        except (TypeError, ValueError):
            raise DataError(
                f"{path}: row {row}, column {name!r}: non-numeric value {cell!r} (type {column.type})"
            ) from None
    return np.array(cells, dtype=np.float64)


def _checked_table(path: Path, header: list[str], values: np.ndarray) -> Table:
    """Check names, emptiness, finiteness and targets; split off the signal."""
    if TARGET_COLUMN not in header:
        shown = ", ".join(header[:5]) + (", ..." if len(header) > 5 else "")
        raise DataError(f"{path}: no {TARGET_COLUMN!r} column (columns: {shown})")
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise DataError(f"{path}: column {duplicates[0]!r} appears more than once")
    if len(header) == 1:
        raise DataError(f"{path}: no signal columns besides {TARGET_COLUMN!r}")
    if values.shape[0] == 0:
        raise DataError(f"{path}: no data rows")
    _raise_at_first(path, ~np.isfinite(values), header, values, "is not finite")
    t = header.index(TARGET_COLUMN)
    targets = values[:, t : t + 1]  # (N, 1)
    _raise_at_first(path, targets != np.round(targets), [TARGET_COLUMN], targets, "is not an integer class id")
    _raise_at_first(path, targets < 0, [TARGET_COLUMN], targets, "is negative; class ids start at 0")
    columns = tuple(name for name in header if name != TARGET_COLUMN)
    signal64 = np.delete(values, t, axis=1)  # (N, C)
    with np.errstate(over="ignore"):  # an overflow becomes inf, reported just below
        signal = signal64.astype(np.float32)
    _raise_at_first(path, ~np.isfinite(signal), columns, signal64, "does not fit in float32")
    return Table(path, columns, signal, targets[:, 0].astype(np.int64))


def _raise_at_first(path: Path, bad: np.ndarray, names: Sequence[str], values: np.ndarray, problem: str) -> None:
    """DataError naming the first True cell of ``bad`` (N, C), if any."""
    cells = np.argwhere(bad)
    if len(cells):
        row, col = cells[0]
        raise DataError(f"{path}: row {row + 1}, column {names[col]!r}: value {values[row, col]:g} {problem}")


def check_compatible(train: Table, test: Table) -> None:
    """Test must have train's signal columns, in order, and only train's classes."""
    if test.columns != train.columns:
        for i, (a, b) in enumerate(zip(train.columns, test.columns)):
            if a != b:
                raise DataError(f"{test.path}: signal column {i + 1} is {b!r} but {train.path} has {a!r}")
        raise DataError(f"{test.path}: {len(test.columns)} signal columns but {train.path} has {len(train.columns)}")
    unseen = np.setdiff1d(np.unique(test.targets), np.unique(train.targets))
    if len(unseen):
        row = int(np.flatnonzero(np.isin(test.targets, unseen))[0]) + 1
        raise DataError(
            f"{test.path}: row {row}, column {TARGET_COLUMN!r}: class ids {unseen.tolist()} "
            f"never occur in the train table {train.path}"
        )


def class_mapping(targets: np.ndarray, class_names: Sequence[str] | None) -> dict[str, int]:
    """Class name -> id for ids 0..max; MIT-BIH names when there are exactly 5."""
    num_classes = int(targets.max()) + 1
    if class_names is None:
        names = MITBIH_CLASS_NAMES if num_classes == 5 else [str(i) for i in range(num_classes)]
    else:
        names = [name.strip() for name in class_names]
        if len(names) < num_classes:
            raise ConfigError(
                f"class_names gives {len(names)} names but the targets go up to "
                f"{num_classes - 1} ({num_classes} classes)"
            )
        if "" in names or len(set(names)) != len(names):
            raise ConfigError(f"class_names must be distinct and non-empty, got {','.join(names)}")
    return {name: i for i, name in enumerate(names)}


def stratified_val_split(table: Table, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, val) of ``table``, val stratified by class, both sorted."""
    from sklearn.model_selection import train_test_split

    classes, counts = np.unique(table.targets, return_counts=True)
    if counts.min() < 2:
        raise DataError(
            f"{table.path}: column {TARGET_COLUMN!r}: class {classes[counts.argmin()]} has "
            "1 row; a stratified validation split needs at least 2 per class"
        )
    try:
        train_rows, val_rows = train_test_split(
            np.arange(len(table.targets)), test_size=val_fraction, stratify=table.targets, random_state=seed
        )
    except ValueError as e:
        raise DataError(f"{table.path}: cannot draw a stratified validation split of {val_fraction}: {e}") from None
    return np.sort(train_rows), np.sort(val_rows)


def write_split(path: Path, signal: np.ndarray, labels: np.ndarray, mapping: dict[str, int], pad_to: int) -> None:
    """Write one split file in the layout of ``videns.data.layout``, with D=1."""
    num_items, length = signal.shape
    features = np.zeros((num_items, pad_to, 1), dtype=np.float32)  # (N, pad_to, 1)
    features[:, :length, 0] = signal
    with h5py.File(path, "w") as f:
        f.create_dataset(
            layout.FEATURES, data=features, compression="gzip", compression_opts=4, chunks=(1, pad_to, 1)
        )  # one chunk per item: readers fetch items singly
        f.create_dataset(layout.LABELS, data=labels.astype(np.int64))
        f.create_dataset(layout.NUM_FRAMES, data=np.full(num_items, length, dtype=np.int32))
        f.attrs[layout.ATTR_MAPPING] = json.dumps(mapping)
        f.attrs[layout.ATTR_NUM_VIDEOS] = num_items
        f.attrs[layout.ATTR_MAX_FRAMES] = pad_to
        f.attrs[layout.ATTR_FEATURE_DIM] = 1
        f.attrs[layout.ATTR_MULTI_SCALE] = False


def convert_tables(
    train_path: Path | str,
    test_path: Path | str,
    out_dir: Path | str,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    pad_to: int | None = None,
    class_names: Sequence[str] | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Check both tables, then write the train/val/test split files; returns split -> path.

    ``pad_to`` zero-pads every item to that many steps; None keeps the tables' own length.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
    paths = {split: layout.split_path(Path(out_dir), split) for split in layout.SPLITS}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise DataError(f"{existing[0]}: already exists; pass --overwrite to replace it")
    train, test = read_table(train_path), read_table(test_path)
    check_compatible(train, test)
    pad_to = len(train.columns) if pad_to is None else pad_to
    if pad_to < len(train.columns):
        raise ConfigError(f"pad_to {pad_to} is smaller than the {len(train.columns)} signal columns of {train.path}")
    mapping = class_mapping(train.targets, class_names)
    train_rows, val_rows = stratified_val_split(train, val_fraction, seed)
    splits = {
        "train": (train.signal[train_rows], train.targets[train_rows]),
        "val": (train.signal[val_rows], train.targets[val_rows]),
        "test": (test.signal, test.targets),
    }
    _write_all(paths, splits, mapping, pad_to)
    for split, (_, labels) in splits.items():
        log.info("%s: %d items, class counts %s", split, len(labels), np.bincount(labels).tolist())
    return paths


def _write_all(paths: dict[str, Path], splits: dict, mapping: dict[str, int], pad_to: int) -> None:
    """Write every split to a temp file, then rename all: no half-written split survives."""
    with ExitStack() as renames:  # each split replaces its file only once every split is written
        temps = {split: renames.enter_context(replacing(path)) for split, path in paths.items()}
        for split, (signal, labels) in splits.items():
            write_split(temps[split], signal, labels, mapping, pad_to)
