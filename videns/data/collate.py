"""Batch assembly: pad to the batch's longest item and keep the lengths."""

import numpy as np
import torch

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # features (B, T, D), lengths (B,), labels (B,)


def pad_collate(items: list[tuple[np.ndarray, int]]) -> Batch:
    """Stack variable-length items into a zero-padded batch."""
    lengths = np.fromiter((f.shape[0] for f, _ in items), dtype=np.int64, count=len(items))
    feature_dim = items[0][0].shape[1]
    padded = np.zeros((len(items), int(lengths.max()), feature_dim), dtype=np.float32)  # (B, T, D)
    for row, (features, _) in enumerate(items):
        padded[row, : features.shape[0]] = features
    labels = np.fromiter((label for _, label in items), dtype=np.int64, count=len(items))
    return torch.from_numpy(padded), torch.from_numpy(lengths), torch.from_numpy(labels)
