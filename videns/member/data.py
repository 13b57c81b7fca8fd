"""Turn a DataConfig into checked splits, a deterministic batch order and loaders."""

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from videns.data import layout
from videns.data.config import GIB, DataConfig
from videns.data.dataset import ArraySplit, FeatureSplit
from videns.data.demo import write_demo_data
from videns.data.inspect import DatasetInfo, check_finite_features, check_finite_file, inspect_dataset
from videns.data.loaders import TrainItems, ViewItems, build_eval_loader, build_train_loader
from videns.data.sampling import EpochBatches, EpochOrder, inverse_frequency_weights

log = logging.getLogger(__name__)


@dataclass
class MemberData:
    """What the loop reads: data facts, the train batches and the val loader.

    ``train`` is what the batches index (SMOTE's output where asked for);
    ``train_file`` is the training split as its file holds it.
    """

    info: DatasetInfo
    train_file: FeatureSplit
    train: FeatureSplit
    batches: EpochBatches
    train_loader: DataLoader
    val_loader: DataLoader
    class_weights: np.ndarray


def ensure_data(cfg: DataConfig) -> DatasetInfo:
    """Generate demo data if asked and the folder is empty, then validate every split.

    Splits that :func:`prepare_member_data` reads into RAM are scanned for
    NaN/inf there, in the array, rather than decompressed twice; the others here.
    """
    if cfg.generate_demo and not any(layout.split_path(cfg.root, s).exists() for s in layout.SPLITS):
        log.info("data.root %s holds no split files: writing demo data there", cfg.root)
        write_demo_data(cfg.root)
    info = inspect_dataset(cfg.root, check_finite=False)
    if cfg.check_finite:
        preloaded = preload_plan(cfg, info)
        for split in layout.SPLITS:
            if not preloaded.get(split, False):
                check_finite_file(info.splits[split].path)
    return info


def preload_plan(cfg: DataConfig, info: DatasetInfo) -> dict[str, bool]:
    """Which of train and val are read into RAM: train first, then val, within ``data.preload_gb``."""
    budget, plan = int(cfg.preload_gb * GIB), {}
    for split in ("train", "val"):
        plan[split] = info.splits[split].nbytes <= budget
        budget -= info.splits[split].nbytes if plan[split] else 0
    return plan


def open_split(cfg: DataConfig, info: DatasetInfo, split: str, preload: bool) -> FeatureSplit:
    """A split, read into RAM when ``preload`` and then checked for NaN/inf (see :func:`ensure_data`)."""
    split_info = info.splits[split]
    opened = FeatureSplit(split_info.path, preload_bytes=split_info.nbytes if preload else 0)
    if cfg.check_finite and opened.preloaded:
        check_finite_features(opened.path, opened.preloaded_features)
    return opened


def prepare_member_data(
    cfg: DataConfig, info: DatasetInfo, seed: int, batch_size: int, eval_batch_size: int, pin_memory: bool
) -> MemberData:
    plan = preload_plan(cfg, info)
    train = open_split(cfg, info, "train", plan["train"])
    val = open_split(cfg, info, "val", plan["val"])
    train_file = train
    train, base_indices = _rebalanced(cfg, train, seed)
    order = EpochOrder(train.labels, seed, weighted=cfg.balance == "weighted_sampler", base_indices=base_indices)
    batches = EpochBatches(
        order, train.lengths, batch_size, bucket_window=cfg.bucket_window, augment_seed=seed if cfg.augment else None
    )
    items = TrainItems(train, seed, augment_items=cfg.augment)
    return MemberData(
        info=info,
        train_file=train_file,
        train=train,
        batches=batches,
        train_loader=build_train_loader(items, batches, cfg.num_workers, pin_memory),
        val_loader=build_eval_loader(ViewItems(val), eval_batch_size, cfg.num_workers, pin_memory),
        class_weights=inverse_frequency_weights(np.bincount(train.labels, minlength=info.num_classes)),
    )


def _rebalanced(cfg: DataConfig, train: FeatureSplit, seed: int) -> tuple[FeatureSplit, np.ndarray | None]:
    if cfg.balance == "oversample":
        from videns.data.rebalance import oversample_indices

        return train, oversample_indices(train.labels, cfg.oversample_target, seed)
    if cfg.balance == "smote":
        from videns.data.rebalance import require_fixed_length, smote_resample

        require_fixed_length(train.lengths)  # before copying every item into one array
        features = np.stack([train[i][0] for i in range(len(train))])  # (N, T, D)
        features, lengths, labels = smote_resample(features, train.lengths, train.labels, seed)
        return ArraySplit(features, lengths, labels, name=f"{train.path.name} + SMOTE"), None
    return train, None


def alpha_tensor(class_weights: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(class_weights, dtype=torch.float32, device=device)
