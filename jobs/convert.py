"""Convert tabular beats (CSV or parquet) to HDF5 train/val/test splits.

    python -m jobs.convert --train mitbih_train.csv --test mitbih_test.csv --out_dir data/mitbih

A malformed input prints one line naming the file, row/column and problem, and exits 2.
"""

import argparse
import logging
import sys
from pathlib import Path

from videns.data.tabular import convert_tables
from videns.errors import UserError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.convert", description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True, help="train table (.csv, .parquet or .pq)")
    parser.add_argument("--test", type=Path, required=True, help="test table, same columns as train")
    parser.add_argument("--out_dir", type=Path, required=True, help="folder for the split files")
    parser.add_argument("--val_fraction", type=float, default=0.2, help="share of train drawn, stratified, as val")
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation draw")
    parser.add_argument("--pad_to", type=int, default=192, help="steps per item after zero-padding")
    parser.add_argument("--class_names", type=lambda s: s.split(","), default=None,
                        help="comma-separated names in id order (default: N,S,V,F,Q for 5 classes, else ids)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing split files")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        paths = convert_tables(
            args.train, args.test, args.out_dir, val_fraction=args.val_fraction, seed=args.seed,
            pad_to=args.pad_to, class_names=args.class_names, overwrite=args.overwrite,
        )
    except UserError as e:
        print(f"error: {' '.join(str(e).splitlines())}", file=sys.stderr)  # one line, always
        return 2
    for split, path in paths.items():
        print(f"{split}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
