"""The SimCLR model: encoder f and projection head g (Chen et al. 2020, Sec. 2.1).

``h = f(x)`` is the representation (served); ``z = g(h) = W2 relu(BN(W1 h))`` feeds the contrastive
loss only. The head is the paper's 2-layer MLP (hidden width = D by default, output 128).
Naming follows timm: ``forward_features`` gives h, ``forward_head`` gives z, or h again with
``pre_logits=True``.
"""

from __future__ import annotations

import torch
from torch import nn

from simclr_search.training.models.encoders import build_encoder


class ProjectionHead(nn.Module):
    """``(B, D) -> (B, out_dim)``: Linear -> BN -> ReLU -> Linear."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        if min(in_dim, hidden_dim, out_dim) <= 0:
            raise ValueError("projection head dimensions must be positive")
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class SimCLRModel(nn.Module):
    """Encoder + projection head.

    Args:
        encoder: a module with ``forward_features`` and ``num_features`` (see ``encoders.py``).
        proj_hidden_dim: hidden width of g; ``0`` means ``encoder.num_features``.
        proj_out_dim: dimension of z (128 in the paper).
    """

    def __init__(
        self, encoder: nn.Module, proj_hidden_dim: int = 0, proj_out_dim: int = 128
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.num_features = int(encoder.num_features)
        hidden = proj_hidden_dim or self.num_features
        self.head = ProjectionHead(self.num_features, hidden, proj_out_dim)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S) -> h (B, D)``."""
        return self.encoder.forward_features(x)

    def forward_head(self, h: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``h (B, D) -> z (B, out)``, or h unchanged with ``pre_logits=True``."""
        return h if pre_logits else self.head(h)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(h, z)``."""
        h = self.forward_features(x)
        return h, self.forward_head(h)


def build_model(
    encoder: str,
    small_stem: bool = True,
    width: int = 32,
    proj_hidden_dim: int = 0,
    proj_out_dim: int = 128,
) -> SimCLRModel:
    return SimCLRModel(build_encoder(encoder, small_stem, width), proj_hidden_dim, proj_out_dim)


def model_from_checkpoint(state: dict) -> SimCLRModel:
    """Rebuild the trained model from a checkpoint dict (``training.checkpoint.load_checkpoint``)."""
    cfg = state["config"]
    model = build_model(
        cfg["encoder"], cfg["small_stem"], cfg["width"], cfg["proj_hidden_dim"], cfg["proj_out_dim"]
    )
    model.load_state_dict(state["model"])
    return model.eval()
