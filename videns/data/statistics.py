"""Per-feature mean and standard deviation over a split's real frames (padding ignored)."""

import numpy as np

from videns.data.dataset import FeatureSplit

# Items summed per step when the split is in RAM: bounds the masked copy's size.
CHUNK_ITEMS = 1024


def feature_statistics(split: FeatureSplit) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), std (D,)) of every real frame of ``split``, accumulated in float64.

    Blocks are merged with Chan et al.'s pairwise update, not sums of squares,
    so a feature with a large offset and a small spread keeps its spread.
    """
    count, mean, squared_deviations = 0, np.zeros(split.feature_dim), np.zeros(split.feature_dim)
    for block in _real_frame_blocks(split):  # (frames, D)
        if not len(block):
            continue
        block = block.astype(np.float64)
        block_mean = block.mean(axis=0)
        block_deviations = np.square(block - block_mean).sum(axis=0)
        merged = count + len(block)
        delta = block_mean - mean
        mean = mean + delta * len(block) / merged
        squared_deviations += block_deviations + np.square(delta) * count * len(block) / merged
        count = merged
    return mean, np.sqrt(squared_deviations / max(count, 1))


def _real_frame_blocks(split: FeatureSplit):
    padded = split.preloaded_features
    if padded is None:  # read item by item: only the real frames leave the file
        for index in range(len(split)):
            yield split[index][0]
        return
    steps = np.arange(padded.shape[1])
    for start in range(0, len(split), CHUNK_ITEMS):
        lengths = split.lengths[start : start + CHUNK_ITEMS]
        yield padded[start : start + CHUNK_ITEMS][steps[None, :] < lengths[:, None]]  # (frames, D)
