"""Convert tabular beats (CSV or parquet) to HDF5 train/val/test splits.

    python -m jobs.convert --train mitbih_train.csv --test mitbih_test.csv --out_dir data/mitbih

A malformed input prints one line naming the file, row/column and problem, and exits 2.
"""

import logging
import sys
from pathlib import Path

from jsonargparse import ActionYesNo, ArgumentParser

from videns.cli import parse_strictly, strict_parser
from videns.data.tabular import convert_tables
from videns.errors import user_errors_as_one_line

PROG = "jobs.convert"


def convert(
    train: Path,
    test: Path,
    out_dir: Path,
    val_fraction: float = 0.2,
    seed: int = 0,
    pad_to: int | None = None,
    class_names: str | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Convert tabular beats (CSV or parquet) to HDF5 train/val/test splits.

    Args:
        train: train table (.csv, .parquet or .pq); one row per item, signal columns and a target column.
        test: test table, same columns as train.
        out_dir: folder for the split files.
        val_fraction: share of train drawn, stratified, as val.
        seed: seed of the validation draw.
        pad_to: steps per item after zero-padding (the ECG recipes' 192 for MIT-BIH's 187-sample beats);
            None keeps the table's own length, its number of signal columns.
        class_names: comma-separated names in id order (None: N,S,V,F,Q for 5 classes, else the ids).
        overwrite: replace existing split files.
    """
    return convert_tables(
        train,
        test,
        out_dir,
        val_fraction=val_fraction,
        seed=seed,
        pad_to=pad_to,
        class_names=class_names.split(",") if class_names else None,
        overwrite=overwrite,
    )


def build_parser() -> ArgumentParser:
    parser = strict_parser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_function_arguments(convert, as_positional=False, skip={"overwrite"})
    # written out so the command line reads `--overwrite`, not `--overwrite true`
    parser.add_argument("--overwrite", action=ActionYesNo, default=False, help="Replace existing split files.")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with user_errors_as_one_line(PROG):
        args = parse_strictly(build_parser(), sys.argv[1:] if argv is None else argv).as_dict()
        paths = convert(**args)
    for split, path in paths.items():
        print(f"{split}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
