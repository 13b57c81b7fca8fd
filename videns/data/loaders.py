"""DataLoaders for training and evaluation over :class:`FeatureSplit` items."""

import signal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from videns.data.augment import TTAMode, augment, augmentation_rng, tta_view
from videns.data.collate import pad_collate
from videns.data.dataset import FeatureSplit
from videns.data.sampling import EpochBatches


class TrainItems(Dataset):
    """Training items keyed by (index, epoch, slot), augmented reproducibly."""

    def __init__(self, split: FeatureSplit, seed: int, augment_items: bool):
        self.split, self.seed, self.augment_items = split, seed, augment_items

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[np.ndarray, int]:
        index, epoch, slot = key
        features, label = self.split[index]
        if self.augment_items:
            features = augment(features, augmentation_rng(self.seed, epoch, slot))
        return features, label


class ViewItems(Dataset):
    """Evaluation items under one test-time view."""

    def __init__(self, split: FeatureSplit, mode: TTAMode = "none"):
        self.split, self.mode = split, mode

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        features, label = self.split[index]
        return tta_view(features, self.mode), label


def ignore_job_signals(_worker_id: int = 0) -> None:
    """Workers leave preemption signals to the main process.

    Forked workers inherit the trainer's (and submitit's) handlers; a worker that
    ran them could save or requeue on its own.
    """
    for signum in (signal.SIGTERM, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_IGN)


def build_train_loader(items: TrainItems, batches: EpochBatches, num_workers: int, pin_memory: bool) -> DataLoader:
    # A private generator keeps DataLoader's base-seed draw off the global RNG,
    # which drives dropout and must replay identically after a resume.
    return DataLoader(
        items,
        batch_sampler=batches,
        collate_fn=pad_collate,
        num_workers=num_workers,
        worker_init_fn=ignore_job_signals if num_workers else None,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
        generator=torch.Generator(),
    )


def build_eval_loader(items: Dataset, batch_size: int, num_workers: int, pin_memory: bool) -> DataLoader:
    return DataLoader(
        items,
        batch_size=batch_size,
        shuffle=False,
        collate_fn=pad_collate,
        num_workers=num_workers,
        worker_init_fn=ignore_job_signals if num_workers else None,
        pin_memory=pin_memory,
        generator=torch.Generator(),
    )
