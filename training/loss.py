"""NT-Xent, the normalized temperature-scaled cross-entropy loss (Chen et al. 2020, Eq. 1).

For a batch of N images the 2N views are ``z = [z_1 .. z_N, z'_1 .. z'_N]``. With cosine similarity
``s(i, j)`` and temperature tau, the loss of the positive pair (i, j) is

    l(i, j) = -log( exp(s(i, j)/tau) / sum_{k != i} exp(s(i, k)/tau) )

and the batch loss averages l over all 2N anchors (both orders of every pair).

Multi-process training gathers the views of every rank as negatives, with gradients flowing back to
the rank that produced them (the paper's "Global BN"/large-batch setup aggregates across cores the
same way). Each rank computes the loss of its own anchors; the mean over ranks equals the
single-process loss on the global batch, and DDP's gradient averaging then gives its gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from simclr_search.training import distributed


class NTXentLoss(nn.Module):
    """NT-Xent over two views.

    Args:
        temperature: tau > 0 (the paper uses 0.1-0.5; 0.2 suits CIFAR-10 at batch 256-512).
        gather_distributed: use negatives from all ranks when torch.distributed is initialised.

    Shapes: ``z1``, ``z2``: ``(N, d)``, row i of both are views of the same image. Returns a scalar.
    """

    def __init__(self, temperature: float = 0.2, gather_distributed: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        if z1.dim() != 2 or z1.shape != z2.shape:
            raise ValueError(
                f"z1 and z2 must both be (N, d), got {tuple(z1.shape)} and {tuple(z2.shape)}"
            )
        n = z1.shape[0]
        if n < 1:
            raise ValueError("NT-Xent needs at least one pair")
        local = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2n, d), rows are anchors
        rank, world = 0, 1
        if self.gather_distributed and distributed.is_initialized():
            rank, world = distributed.rank(), distributed.world_size()
        # Columns: every rank's views (world*2n, d); rows stay this rank's anchors.
        everything = torch.cat(distributed.all_gather_with_grad(local)) if world > 1 else local
        logits = local @ everything.T / self.temperature  # (2n, world*2n)
        offset = rank * 2 * n
        rows = torch.arange(2 * n, device=local.device)
        logits[rows, rows + offset] = float("-inf")  # drop s(i, i)
        positives = offset + (rows + n) % (2 * n)  # view 1 of image i pairs with view 2, and back
        return F.cross_entropy(logits, positives)
