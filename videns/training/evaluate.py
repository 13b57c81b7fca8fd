"""Run a model over a loader and collect class probabilities."""

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader


@torch.no_grad()
def predict_probs(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    criterion: nn.Module | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Softmax probabilities (N, C), labels (N,) and the mean criterion loss (nan without one)."""
    model.eval()
    probs, labels, loss_sum = [], [], torch.zeros((), dtype=torch.float64, device=device)
    for features, lengths, batch_labels in loader:
        features = features.to(device, non_blocking=True)
        batch_labels = batch_labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(features, lengths).float()
        if criterion is not None:
            loss_sum += criterion(logits, batch_labels).double() * len(batch_labels)
        probs.append(torch.softmax(logits, dim=1))
        labels.append(batch_labels)
    all_probs = torch.cat(probs).cpu().numpy()
    mean_loss = float(loss_sum) / len(all_probs) if criterion is not None else float("nan")
    return all_probs, torch.cat(labels).cpu().numpy(), mean_loss
