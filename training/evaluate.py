"""Evaluation of frozen representations: feature extraction and the weighted kNN monitor.

kNN protocol (Wu et al. 2018, used by lightly, solo-learn and others for SimCLR monitors): features
are L2-normalised; each test image takes its k=200 most cosine-similar training images, each votes
for its class with weight ``exp(sim / T)``, T=0.1; the class with the largest total wins.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from simclr_search.training.precision import autocast


def to_input(
    images: np.ndarray | torch.Tensor,
    input_size: int,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device,
) -> torch.Tensor:
    """``(B, S, S, 3)`` uint8 (numpy or torch) -> normalised ``(B, 3, input_size, input_size)`` float."""
    batch = torch.from_numpy(np.array(images)) if isinstance(images, np.ndarray) else images
    x = batch.to(device).permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-1] != input_size or x.shape[-2] != input_size:
        x = F.interpolate(
            x, size=(input_size, input_size), mode="bilinear", antialias=True, align_corners=False
        )
    return (x - mean.view(1, 3, 1, 1).to(device)) / std.view(1, 3, 1, 1).to(device)


@torch.no_grad()
def extract_features(
    model: nn.Module,
    images: np.ndarray,
    input_size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    device: torch.device,
    batch_size: int = 512,
    precision: str = "fp32",
) -> torch.Tensor:
    """Representation h for every image: ``(N, S, S, 3)`` uint8 -> ``(N, D)`` float32 on the CPU.

    ``model`` must have ``forward_features``. BatchNorm uses running statistics (eval mode); the
    model's previous mode is restored.
    """
    was_training = model.training
    model.eval()
    mean_t, std_t = torch.tensor(mean), torch.tensor(std)
    out = []
    try:
        for start in range(0, len(images), batch_size):
            x = to_input(images[start : start + batch_size], input_size, mean_t, std_t, device)
            x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, precision):
                h = model.forward_features(x)
            out.append(h.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


def knn_predict(
    test_features: torch.Tensor,
    bank_features: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk: int = 1024,
) -> torch.Tensor:
    """Weighted kNN class prediction. ``(Q, D)``, ``(N, D)``, ``(N,)`` -> ``(Q,)`` class indices."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    bank = F.normalize(bank_features.float(), dim=1)
    k = min(k, bank.shape[0])
    predictions = []
    for start in range(0, test_features.shape[0], chunk):
        query = F.normalize(test_features[start : start + chunk].float(), dim=1)
        sim, idx = (query @ bank.T).topk(k, dim=1)  # (q, k)
        weights = (sim / temperature).exp()
        votes = torch.zeros(query.shape[0], num_classes)
        votes.scatter_add_(1, bank_labels[idx], weights)
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: np.ndarray,
    test_features: torch.Tensor,
    test_labels: np.ndarray,
    k: int = 200,
    temperature: float = 0.1,
) -> float:
    """Top-1 kNN accuracy in [0, 1]."""
    bank_labels = torch.as_tensor(train_labels, dtype=torch.long)
    num_classes = int(max(bank_labels.max().item(), int(np.max(test_labels))) + 1)
    pred = knn_predict(test_features, train_features, bank_labels, num_classes, k, temperature)
    return float((pred.numpy() == np.asarray(test_labels)).mean())
