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

import numpy as np
import torch
import torch.nn.functional as F

from simclr_search.training.knn_eval import labelled_features
from simclr_search.training.precision import PRECISIONS


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="linear probe on frozen features", add_help=add_help)
    p.add_argument("--checkpoint", required=True)
    p.add_argument(
        "--train", required=True, help="labelled training images (class sub-folders or archive)"
    )
    p.add_argument("--test", required=True, help="labelled test images")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    p.add_argument("--cache-dir", default="")
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


def linear_probe(
    checkpoint: str,
    train: str,
    test: str,
    epochs: int = 100,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    batch_size: int = 1024,
    seed: int = 0,
    device_name: str = "auto",
    precision: str = "auto",
    cache_dir: str | None = None,
) -> dict[str, float]:
    feats, libs = labelled_features(checkpoint, (train, test), device_name, precision, cache_dir)
    mean, std = feats[0].mean(0), feats[0].std(0) + 1e-6
    train_x, test_x = (feats[0] - mean) / std, (feats[1] - mean) / std
    train_y = torch.as_tensor(libs[0].labels)
    head = fit_linear(
        train_x, train_y, len(libs[0].classes), epochs, lr, weight_decay, batch_size, seed
    )
    with torch.no_grad():
        train_acc = float((head(train_x).argmax(1) == train_y).float().mean())
        test_acc = float((head(test_x).argmax(1).numpy() == np.asarray(libs[1].labels)).mean())
    return {"linear_top1": test_acc, "train_top1": train_acc}


def cli_main(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    result = linear_probe(
        args.checkpoint,
        args.train,
        args.test,
        args.epochs,
        args.lr,
        args.weight_decay,
        args.batch_size,
        args.seed,
        args.device,
        args.precision,
        args.cache_dir or None,
    )
    print(json.dumps(result))
    return 0
