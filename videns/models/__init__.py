"""Sequence classifiers: ``forward(x (B, T, D), lengths (B,)) -> logits (B, C)``."""

from videns.models.base import SequenceClassifier
from videns.models.class_path import build_model
from videns.models.fcn import FCNClassifier
from videns.models.inception import InceptionTimeClassifier
from videns.models.temporal import TemporalAttentionClassifier

__all__ = ["SequenceClassifier", "TemporalAttentionClassifier", "build_model"]
__all__ += ["FCNClassifier", "InceptionTimeClassifier"]
