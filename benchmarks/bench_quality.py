"""Representation quality for a fixed time budget: kNN top-1 on CIFAR-10 test after training on CIFAR-10 train.

Trains the compact encoder with ``simclr train``'s code path under a wall-clock budget (training and
the kNN evaluations together), then reports kNN top-1 (k=200, T=0.1, cosine) of h, the epochs
reached, and the random-initialisation floor (the same encoder untrained, same protocol).

    python benchmarks/bench_quality.py                 # the 30-minute budget of the issue
    python benchmarks/bench_quality.py --quick         # 0.5-minute budget: a smoke run
The equivalent CLI command is printed, so a run can be reproduced without this script.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cifar, emit, machine
from simclr_search.training.config import TrainConfig
from simclr_search.training.data.library import build_library
from simclr_search.training.models.simclr import build_model
from simclr_search.training.precision import resolve_precision, select_device
from simclr_search.training.train import evaluate, run


def random_floor(cfg: TrainConfig, cache: str) -> float:
    torch.manual_seed(cfg.seed)
    device = select_device(cfg.device)
    model = build_model(cfg.encoder, cfg.small_stem, cfg.width).to(
        device, memory_format=torch.channels_last
    )
    bank = build_library(cfg.data, cfg.cache_size, cache, progress=False)
    test = build_library(cfg.knn_test, cfg.cache_size, cache, progress=False)
    return evaluate(model, bank, test, cfg, device, resolve_precision(device, cfg.precision))


def training_images_per_s(metrics: Path) -> float:
    """Median images/s (two views each) over the run's logged steps, the first interval left out."""
    rates = [
        row["images_per_s"]
        for row in map(json.loads, metrics.read_text().splitlines())
        if row.get("kind") == "step" and "images_per_s" in row
    ]
    return float(statistics.median(rates[1:] or rates)) if rates else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--encoder", default="compact")
    parser.add_argument("--out-dir", default="")
    parser.add_argument("--compile", action="store_true", help="torch.compile the training model")
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--temperature", type=float, default=TrainConfig.temperature)
    parser.add_argument("--blur-p", type=float, default=TrainConfig.blur_p)
    parser.add_argument("--rotation-degrees", type=float, default=TrainConfig.rotation_degrees)
    parser.add_argument("--proj-hidden-dim", type=int, default=TrainConfig.proj_hidden_dim)
    parser.add_argument("--noise-p", type=float, default=TrainConfig.noise_p)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--eval-every", type=int, default=5, help="epochs between kNN evaluations")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--view-size", type=int, default=0, help="training view side (0: 32)")
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    minutes = 0.5 if args.quick else args.minutes
    out_dir = args.out_dir or tempfile.mkdtemp(prefix="simclr-quality-")
    cache = str(Path(tempfile.gettempdir()) / "simclr-bench-cache")
    cfg = TrainConfig(
        data=str(cifar("train")),
        knn_test=str(cifar("test")),
        out_dir=out_dir,
        cache_dir=cache,
        encoder=args.encoder,
        time_budget_min=minutes,
        eval_every=args.eval_every,
        batch_size=args.batch_size,
        device=args.device,
        view_size=args.view_size,
        seed=args.seed,
        compile=args.compile,
        progress=False,
        lr=args.lr,
        temperature=args.temperature,
        blur_p=args.blur_p,
        rotation_degrees=args.rotation_degrees,
        proj_hidden_dim=args.proj_hidden_dim,
        noise_p=args.noise_p,
    )
    command = (
        f"simclr train --data {shlex.quote(cfg.data)} --knn-test {shlex.quote(cfg.knn_test)} "
        f"--encoder {cfg.encoder} --time-budget-min {minutes:g} --eval-every {cfg.eval_every} "
        f"--lr {cfg.lr:g} --temperature {cfg.temperature:g} --blur-p {cfg.blur_p:g} "
        f"--rotation-degrees {cfg.rotation_degrees:g} --proj-hidden-dim {cfg.proj_hidden_dim} "
        f"--noise-p {cfg.noise_p:g} --batch-size {cfg.batch_size} --device {cfg.device}"
        + (f" --view-size {cfg.view_size}" if cfg.view_size else "")
        + (f" --seed {cfg.seed}" if cfg.seed else "")
        + (" --compile" if args.compile else "")
    )
    print(f"machine: {machine()}")
    print(f"command: {command}")
    floor = random_floor(cfg, cache)
    print(f"random-initialisation floor: kNN top-1 {100 * floor:.2f}%")
    summary = run(cfg)
    images_per_s = training_images_per_s(Path(out_dir) / "metrics.jsonl")
    print(
        f"after {summary['seconds'] / 60:.1f} min ({summary['epochs']:.1f} epochs, {summary['precision']}): "
        f"kNN top-1 {100 * summary['knn_top1']:.2f}% (floor {100 * floor:.2f}%); "
        f"{images_per_s:.0f} training images/s on {summary['device']}; curves: {out_dir}/curves.png"
    )
    emit(
        {
            "knn_top1": summary["knn_top1"],
            "random_init_knn_top1": floor,
            "epochs": summary["epochs"],
            "minutes": summary["seconds"] / 60,
            "budget_minutes": minutes,
            "encoder": cfg.encoder,
            "batch_size": cfg.batch_size,
            "device": summary["device"],
            "machine": machine(),
            "train_images_per_s": images_per_s,
            "command": command,
            "quick": args.quick,
            "out_dir": out_dir,
        }
    )


if __name__ == "__main__":
    main()
