"""Write generated data in the split layout: ``python -m jobs.make_data --out_dir DIR [--kind series]``."""

import sys
from pathlib import Path
from typing import Literal

from jsonargparse import ArgumentParser

from videns.cli import parse_strictly, strict_parser
from videns.data.demo import write_demo_data
from videns.data.series import write_series_data
from videns.errors import user_errors_as_one_line

PROG = "jobs.make_data"


def make_data(
    *,
    out_dir: Path,
    kind: Literal["video", "series"] = "video",
    num_videos: int = 800,
    feature_dim: int = 32,
    max_frames: int = 73,
    seed: int = 0,
) -> None:
    """Generate train/val/test splits (60/20/20).

    Args:
        out_dir: folder to write the three split files into.
        kind: video: the demo's frame features, the class in the order of two events (D = feature_dim);
            series: univariate series in raw units, the class in the waveform's shape (6 classes).
        num_videos: total items over the three splits.
        feature_dim: per-frame feature size D (video only).
        max_frames: longest item; video lengths vary from 16 up to this, series lengths from 48.
        seed: generator seed; the same seed writes the same data.
    """
    if kind == "series":
        paths = write_series_data(out_dir, num_series=num_videos, max_length=max(max_frames, 48), seed=seed)
    else:
        paths = write_demo_data(
            out_dir, num_videos=num_videos, feature_dim=feature_dim, max_frames=max_frames, seed=seed
        )
    for split, path in paths.items():
        print(f"{split}: {path}")


def build_parser() -> ArgumentParser:
    parser = strict_parser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_function_arguments(make_data, as_positional=False)
    return parser


def main(args: list[str] | None = None) -> int:
    with user_errors_as_one_line(PROG):
        make_data(**parse_strictly(build_parser(), sys.argv[1:] if args is None else args).as_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
