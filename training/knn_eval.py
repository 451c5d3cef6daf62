"""``simclr knn``: weighted kNN top-1 of a trained checkpoint's representation h.

Uses the protocol of the training monitor (``evaluate.py``): cosine similarity, k=200, T=0.1.
"""

from __future__ import annotations

import argparse
import json

from training.checkpoint import load_checkpoint
from training.data.library import build_library
from training.evaluate import extract_features, knn_accuracy
from training.models.simclr import model_from_checkpoint
from training.precision import PRECISIONS, resolve_precision, select_device


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
    state = load_checkpoint(checkpoint)
    facts = state["preprocessing"]
    model = model_from_checkpoint(state)
    device = select_device(device_name)
    precision = resolve_precision(device, precision)
    model.to(device)
    size = state["config"]["input_size"]
    cache = state["config"]["input_size"] if size <= 64 else round(size * 8 / 7)
    feats, labels = [], []
    for source in (train, test):
        lib = build_library(source, cache, cache_dir)
        if not lib.has_labels:
            raise ValueError(f"{source} has no class sub-folders; kNN evaluation needs labels")
        feats.append(
            extract_features(
                model, lib.images, size, facts["mean"], facts["std"], device, precision=precision
            )
        )
        labels.append(lib.labels)
    return knn_accuracy(feats[0], labels[0], feats[1], labels[1], k, temperature)


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
