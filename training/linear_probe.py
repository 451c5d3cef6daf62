"""``simclr linear-probe``: linear evaluation of a checkpoint's frozen representation h.

The standard protocol (Chen et al. 2020, Sec. 4 and Appendix B.6) trains a linear classifier on
frozen features. Here the features of every image are computed once (centre view, no augmentation),
standardised with the training set's statistics, and a multinomial logistic regression is fitted
with AdamW and a cosine schedule on the full feature matrix: seconds on a CPU, and the number it
gives is a lower bound of the augmented protocol's.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from simclr_search.settings import add_arguments, from_args, setting
from simclr_search.training.knn_eval import EvalData, labelled_features


@dataclass
class LinearProbeConfig(EvalData):
    epochs: int = setting(100, "passes over the training features")
    lr: float = setting(1e-2, "peak learning rate (AdamW, cosine)")
    weight_decay: float = setting(1e-4, "weight decay")
    batch_size: int = setting(1024, "features per step")
    seed: int = setting(0, "seed of the batches and initialisation")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="linear probe on frozen features", add_help=add_help)
    add_arguments(p, LinearProbeConfig)
    return p


def fit_linear(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    num_classes: int,
    epochs: int = 100,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    batch_size: int = 1024,
    seed: int = 0,
) -> torch.nn.Linear:
    """Multinomial logistic regression on ``(N, D)`` features (already standardised)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = torch.nn.Linear(train_x.shape[1], num_classes)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * max(1, (len(train_x) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(epochs):
        order = torch.randperm(len(train_x), generator=generator)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(head(train_x[idx]), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return head


def linear_probe(cfg: LinearProbeConfig) -> dict[str, float]:
    feats, libs = labelled_features(cfg)
    mean, std = feats[0].mean(0), feats[0].std(0) + 1e-6
    train_x, test_x = (feats[0] - mean) / std, (feats[1] - mean) / std
    train_y = torch.as_tensor(libs[0].labels)
    head = fit_linear(
        train_x,
        train_y,
        len(libs[0].classes),
        cfg.epochs,
        cfg.lr,
        cfg.weight_decay,
        cfg.batch_size,
        cfg.seed,
    )
    with torch.no_grad():
        train_acc = float((head(train_x).argmax(1) == train_y).float().mean())
        test_acc = float((head(test_x).argmax(1).numpy() == np.asarray(libs[1].labels)).mean())
    return {"linear_top1": test_acc, "train_top1": train_acc}


def cli_main(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    print(json.dumps(linear_probe(from_args(LinearProbeConfig, args))))
    return 0
