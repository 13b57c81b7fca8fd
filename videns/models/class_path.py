"""Rebuild a model from the spec saved in a checkpoint (``class_path`` + ``init_args``)."""

import importlib
from collections.abc import Mapping
from typing import Any

from videns.errors import CheckpointError
from videns.models.base import SequenceClassifier

ALLOWED_PREFIX = "videns.models."


def build_model(spec: Mapping[str, Any], feature_dim: int, num_classes: int) -> SequenceClassifier:
    """Instantiate ``spec["class_path"]`` with ``spec["init_args"]`` and the data-derived sizes.

    Only classes under ``videns.models`` are accepted: a checkpoint names code to
    run, so it must not be able to name arbitrary code.
    """
    cls = model_class_of(spec.get("class_path", ""))
    init_args = dict(spec.get("init_args") or {})
    for key in ("head_dims", "image_shape"):  # JSON turns tuples into lists
        if isinstance(init_args.get(key), list):
            init_args[key] = tuple(init_args[key])
    return cls(feature_dim, num_classes, **init_args)


def model_class_of(class_path: str) -> type[SequenceClassifier]:
    """The model class that ``class_path`` names; only classes under ``videns.models``."""
    if not class_path.startswith(ALLOWED_PREFIX):
        raise CheckpointError(
            f"model.class_path {class_path!r} is not a videns model (must start with {ALLOWED_PREFIX})"
        )
    module_name, _, class_name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, SequenceClassifier)):
        raise CheckpointError(f"model.class_path {class_path!r} is not a SequenceClassifier")
    return cls
