"""A reference reader and training loop: the plain way to read these files and train the reference recipe.

This is the baseline every speed-up is measured against. It keeps the
plain way's costs on purpose:

- one h5py read per item of the *full padded row* (``features[idx]``, gzip'd,
  chunked one item per chunk), then a slice by ``num_frames[idx]``, with the
  label and the length read per item from the file as well;
- sequences packed for the LSTM in every batch, attention and pooling over the
  padded frames without a mask (the attention also returns its weights, as
  ``nn.MultiheadAttention`` does by default);
- a host sync every step (``loss.item()``, and the running accuracy);
- ``CosineAnnealingWarmRestarts`` stepped once per batch with integer steps;
- fp32, no pinned memory, blocking copies, workers that are not persistent.

One deviation keeps the baseline from crashing rather than making it faster:
with DataLoader workers, each worker re-opens the file (sharing the handle
opened in ``__init__`` across forked workers is what h5py does not support). The per-item read is unchanged.
"""

import logging
import random
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, pad_sequence
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler, get_worker_info

from videns.bench.measure import Stopwatch
from videns.data import layout
from videns.data.sampling import inverse_frequency_weights
from videns.models.temporal import TemporalAttentionClassifier
from videns.training.loss import FocalLoss

log = logging.getLogger(__name__)

# The reference recipe: AdamW, cosine restarts counted in batches, clipping.
REFERENCE_WEIGHT_DECAY = 5e-4
REFERENCE_T0, REFERENCE_T_MULT, REFERENCE_ETA_MIN = 20, 2, 1e-6
REFERENCE_GRAD_CLIP = 1.0
REFERENCE_GAMMA, REFERENCE_SMOOTHING = 2.0, 0.1


class ReferenceDataset(Dataset):
    """``dataset[i] -> (features [T_i, D] float32 tensor, label)``, read one item at a time from the file."""

    def __init__(self, path: Path, augment: bool = False):
        self.path = Path(path)
        self.augment = augment
        self._open()
        self.num_videos = int(self.h5.attrs[layout.ATTR_NUM_VIDEOS])

    def _open(self) -> None:
        self.h5 = h5py.File(self.path, "r")
        self.features = self.h5[layout.FEATURES]
        self.labels = self.h5[layout.LABELS]
        self.num_frames = self.h5[layout.NUM_FRAMES]

    def __len__(self) -> int:
        return self.num_videos

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int]:
        features = self.features[idx]  # (max_frames, D): the whole padded row is decompressed
        num_frames = int(self.num_frames[idx])
        label = int(self.labels[idx])
        features = torch.FloatTensor(features[:num_frames])  # (T_i, D)
        if self.augment:
            features = reference_augment(features)
        return features, label

    def all_labels(self) -> np.ndarray:
        return self.labels[()].astype(np.int64)


def reference_augment(features: torch.Tensor) -> torch.Tensor:
    """The reference recipe's augmentation, drawing from Python's global ``random``."""
    num_frames = features.shape[0]
    if num_frames > 8:
        if random.random() < 0.5:
            new_length = max(int(num_frames * random.uniform(0.7, 1.0)), 8)
            features = features[sorted(random.sample(range(num_frames), new_length))]
        if random.random() < 0.3:
            shift = random.randint(-3, 3)
            if shift != 0:
                features = torch.roll(features, shifts=shift, dims=0)
        if random.random() < 0.2:
            features = features + torch.randn_like(features) * 0.01
    return features


def reference_collate(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad to the batch's longest item: features (B, T, D), lengths (B,), labels (B,)."""
    sequences = [features for features, _ in batch]
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    labels = torch.tensor([label for _, label in batch], dtype=torch.long)
    return pad_sequence(sequences, batch_first=True), lengths, labels


def _reopen_in_worker(_worker_id: int) -> None:
    info = get_worker_info()
    info.dataset._open()


def build_reference_loader(
    dataset: ReferenceDataset,
    batch_size: int,
    num_workers: int,
    sampler=None,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=shuffle and sampler is None,
        collate_fn=reference_collate,
        num_workers=num_workers,
        generator=generator,
        worker_init_fn=_reopen_in_worker if num_workers else None,
    )


class ReferenceTemporalModel(TemporalAttentionClassifier):
    """The reference model's forward on the same layers: packs always, no key-padding mask, pooling over padding."""

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.input_projection(x)  # (B, T, H)
        packed = pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        lstm_out, _ = pad_packed_sequence(out, batch_first=True)  # (B, T_max, W)
        attended, _ = self.attention(lstm_out, lstm_out, lstm_out)  # no mask; weights returned (default)
        attended = self.attention_norm(lstm_out + self.attention_dropout(attended))  # (B, T_max, W)
        weights = F.softmax(self.attention_pooling(attended), dim=1)  # (B, T_max, 1), padding included
        pooled = (attended * weights).sum(dim=1)  # (B, W)
        return self.classifier(pooled)  # (B, C)


class ReferenceTrainer:
    """The reference loop, one epoch per call: train, validate, ``torch.save`` the best model."""

    def __init__(
        self,
        data_root: Path,
        model_args: dict[str, Any],
        *,
        seed: int,
        batch_size: int,
        lr: float,
        num_workers: int,
        device: torch.device,
        out_dir: Path,
    ):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        train = ReferenceDataset(layout.split_path(data_root, "train"), augment=True)
        val = ReferenceDataset(layout.split_path(data_root, "val"))
        labels = train.all_labels()
        class_weights = inverse_frequency_weights(np.bincount(labels, minlength=len(layout.VIDEO_CLASS_NAMES)))
        sampler = WeightedRandomSampler(
            torch.as_tensor(class_weights[labels], dtype=torch.double),
            len(labels),
            replacement=True,
            generator=torch.Generator().manual_seed(seed),
        )
        self.train_loader = build_reference_loader(train, batch_size, num_workers, sampler=sampler)
        self.val_loader = build_reference_loader(val, batch_size, num_workers)
        self.device = device
        self.model = ReferenceTemporalModel(train.features.shape[2], len(class_weights), **model_args).to(device)
        self.criterion = FocalLoss(
            torch.as_tensor(class_weights, dtype=torch.float32, device=device), REFERENCE_GAMMA, REFERENCE_SMOOTHING
        )
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=REFERENCE_WEIGHT_DECAY)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            self.optimizer, T_0=REFERENCE_T0, T_mult=REFERENCE_T_MULT, eta_min=REFERENCE_ETA_MIN
        )
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.epoch, self.best = 0, -1.0

    def run_epoch(self) -> dict[str, Any]:
        """One epoch; its wall, train and val seconds, train loss and val accuracy."""
        wall = Stopwatch(self.device)
        with wall:
            train_s, train_loss = _reference_train_epoch(
                self.model, self.train_loader, self.criterion, self.optimizer, self.scheduler, self.device
            )
            val_start = time.perf_counter()
            val_accuracy = _reference_validate(self.model, self.val_loader, self.device)
            if val_accuracy > self.best:
                self.best = val_accuracy
                torch.save(self.model.state_dict(), self.out_dir / "best_model.pth")
        self.epoch += 1
        log.info("reference epoch %d: %.2fs, val acc %.4f", self.epoch, wall.seconds, val_accuracy)
        return {
            "epoch": self.epoch,
            "wall_s": wall.seconds,
            "train_s": train_s,
            "val_s": time.perf_counter() - val_start,
            "train_loss": train_loss,
            "val_accuracy": val_accuracy,
            "steps": len(self.train_loader),
        }


def _reference_train_epoch(model, loader, criterion, optimizer, scheduler, device) -> tuple[float, float]:
    model.train()
    start, total_loss, correct, seen = time.perf_counter(), 0.0, 0, 0
    for features, lengths, labels in loader:
        features, labels = features.to(device), labels.to(device)
        optimizer.zero_grad()
        logits = model(features, lengths)
        loss = criterion(logits, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), REFERENCE_GRAD_CLIP)
        optimizer.step()
        scheduler.step()  # once per batch, integer steps: cycles of 20, 40, ... batches
        total_loss += loss.item()  # host sync every step
        correct += (logits.argmax(1) == labels).sum().item()
        seen += len(labels)
    return time.perf_counter() - start, total_loss / max(len(loader), 1)


@torch.no_grad()
def _reference_validate(model, loader, device) -> float:
    model.eval()
    correct, seen = 0, 0
    for features, lengths, labels in loader:
        features, labels = features.to(device), labels.to(device)
        correct += (model(features, lengths).argmax(1) == labels).sum().item()
        seen += len(labels)
    return correct / max(seen, 1)
