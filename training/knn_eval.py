"""``simclr knn``: weighted kNN top-1 of a trained checkpoint's representation h.

Uses the protocol of the training monitor (``evaluate.py``): cosine similarity, k=200, T=0.1.
"""

from __future__ import annotations

import argparse
import json

import torch

from simclr_search.training.checkpoint import load_checkpoint
from simclr_search.training.config import cache_size_for
from simclr_search.training.data.library import ImageLibrary, build_library
from simclr_search.training.evaluate import extract_features, knn_accuracy
from simclr_search.training.models.simclr import model_from_checkpoint
from simclr_search.training.precision import PRECISIONS, resolve_precision, select_device


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="kNN evaluation of a checkpoint", add_help=add_help)
    p.add_argument("--checkpoint", required=True)
    p.add_argument(
        "--train", required=True, help="labelled memory bank (class sub-folders or archive)"
    )
    p.add_argument("--test", required=True, help="labelled images to classify")
    p.add_argument("--k", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    p.add_argument("--cache-dir", default="")
    return p


def knn_top1(
    checkpoint: str,
    train: str,
    test: str,
    k: int = 200,
    temperature: float = 0.1,
    device_name: str = "auto",
    precision: str = "auto",
    cache_dir: str | None = None,
) -> float:
    (train_x, test_x), (bank, queries) = labelled_features(
        checkpoint, (train, test), device_name, precision, cache_dir
    )
    return knn_accuracy(train_x, bank.labels, test_x, queries.labels, k, temperature)


def labelled_features(
    checkpoint: str,
    sources: tuple[str, str],
    device_name: str,
    precision: str,
    cache_dir: str | None,
) -> tuple[list[torch.Tensor], list[ImageLibrary]]:
    """h of every image of a labelled train and test set, with the checkpoint's own preprocessing."""
    state = load_checkpoint(checkpoint)
    facts = state["preprocessing"]
    device = select_device(device_name)
    precision = resolve_precision(device, precision)
    model = model_from_checkpoint(state).to(device)
    size = int(facts["input_size"])
    libs = [build_library(source, cache_size_for(size), cache_dir) for source in sources]
    for source, lib in zip(sources, libs, strict=True):
        if not lib.has_labels:
            raise ValueError(f"{source} has no class sub-folders; evaluation needs labels")
    if libs[0].classes != libs[1].classes:
        raise ValueError("train and test images have different class folders")
    feats = [
        extract_features(
            model, lib.images, size, facts["mean"], facts["std"], device, precision=precision
        )
        for lib in libs
    ]
    return feats, libs


def cli_main(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    top1 = knn_top1(
        args.checkpoint,
        args.train,
        args.test,
        args.k,
        args.temperature,
        args.device,
        args.precision,
        args.cache_dir or None,
    )
    print(json.dumps({"knn_top1": top1, "k": args.k, "temperature": args.temperature}))
    return 0
