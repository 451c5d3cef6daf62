"""``simclr knn``: weighted kNN top-1 of a trained checkpoint's representation h.

Uses the protocol of the training monitor (``evaluate.py``): cosine similarity, k=200, T=0.1.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import torch

from simclr_search.settings import add_arguments, from_args, setting
from simclr_search.training.checkpoint import load_checkpoint
from simclr_search.training.config import cache_size_for
from simclr_search.training.data.library import ImageLibrary, build_library
from simclr_search.training.evaluate import extract_features, knn_accuracy
from simclr_search.training.models.simclr import model_from_checkpoint
from simclr_search.training.precision import PRECISIONS, resolve_precision, select_device


@dataclass
class EvalData:
    """A checkpoint and the labelled images it is evaluated on (shared with the linear probe)."""

    checkpoint: str = setting(help="trained encoder checkpoint (simclr train)")
    train: str = setting(help="labelled memory bank / training images (class sub-folders)")
    test: str = setting(help="labelled images to classify")
    device: str = setting("auto", "auto, cpu, cuda, cuda:N")
    precision: str = setting("auto", "bf16 where the device has it", choices=PRECISIONS)
    cache_dir: str = setting("", "decoded-image cache (default ~/.cache/simclr-search)")


@dataclass
class KnnConfig(EvalData):
    k: int = setting(200, "neighbours that vote")
    temperature: float = setting(0.1, "vote weight exp(cosine / T)")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="kNN evaluation of a checkpoint", add_help=add_help)
    add_arguments(p, KnnConfig)
    return p


def knn_top1(cfg: KnnConfig) -> float:
    (train_x, test_x), (bank, queries) = labelled_features(cfg)
    return knn_accuracy(train_x, bank.labels, test_x, queries.labels, cfg.k, cfg.temperature)


def labelled_features(data: EvalData) -> tuple[list[torch.Tensor], list[ImageLibrary]]:
    """h of every image of the labelled train and test sets, with the checkpoint's own
    preprocessing."""
    state = load_checkpoint(data.checkpoint)
    facts = state["preprocessing"]
    device = select_device(data.device)
    precision = resolve_precision(device, data.precision)
    sources, cache_dir = (data.train, data.test), data.cache_dir or None
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
    cfg = from_args(KnnConfig, args)
    print(json.dumps({"knn_top1": knn_top1(cfg), "k": cfg.k, "temperature": cfg.temperature}))
    return 0
