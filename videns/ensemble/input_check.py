"""Check a features file to predict on against the ensemble's members, before any work.

Same layout as a split file, but ``labels`` and the ``category_mapping``
attribute may be absent. Every problem is one DataError naming file, key and problem.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from videns.data import layout
from videns.data.inspect import (
    check_finite_features,
    check_labels,
    check_num_frames,
    features_shape,
    open_split_file,
    read_mapping,
    read_per_item,
    require_dataset,
)
from videns.errors import DataError


@dataclass(frozen=True)
class InputFacts:
    """What the input file holds."""

    num_items: int
    has_labels: bool
    has_mapping: bool


def check_input_file(path: Path, class_names: Sequence[str], feature_dim: int) -> InputFacts:
    """Raise DataError on the first problem; the whole file is scanned for NaN/inf."""
    path = Path(path)
    expected = {name: i for i, name in enumerate(class_names)}
    with open_split_file(path) as f:  # a damaged or unreadable file is one line too
        features, num_frames = (require_dataset(f, path, key) for key in (layout.FEATURES, layout.NUM_FRAMES))
        num_items, max_frames, dim = features_shape(path, features)
        if num_items == 0:
            raise DataError(f"{path}: {layout.FEATURES}: no items")
        if dim != feature_dim:
            raise DataError(f"{path}: {layout.FEATURES}: feature size {dim} disagrees with the members' {feature_dim}")
        check_num_frames(path, read_per_item(path, layout.NUM_FRAMES, num_frames, num_items), max_frames)
        has_mapping = layout.ATTR_MAPPING in f.attrs
        mapping = read_mapping(f, path) if has_mapping else expected
        if mapping != expected:
            raise DataError(
                f"{path}: attribute {layout.ATTR_MAPPING}: class mapping {json.dumps(mapping)} "
                f"disagrees with the members' {json.dumps(expected)}"
            )
        has_labels = layout.LABELS in f
        if has_labels:
            labels = require_dataset(f, path, layout.LABELS)
            check_labels(path, read_per_item(path, layout.LABELS, labels, num_items), expected)
        check_finite_features(path, features)
    return InputFacts(num_items, has_labels, has_mapping)
