"""The command line of ``simclr train``: flags with the :class:`TrainConfig` defaults, and a config file.

Precedence: the dataclass defaults < a TOML / JSON ``--config`` file < flags given explicitly on the
command line (so a file can set ``batch-size = 512`` and one run can still override it).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from simclr_search.training.config import TrainConfig, load_config_file
from simclr_search.training.models.encoders import ENCODERS
from simclr_search.training.optim import LR_SCALINGS, OPTIMIZERS
from simclr_search.training.precision import PRECISIONS


def _bool(value: str) -> bool:
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {value!r}")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(
        description="Train a SimCLR encoder on a folder of images", add_help=add_help
    )
    p.add_argument("--config", help="TOML or JSON file whose keys set this run's defaults")
    g = p.add_argument_group("data")
    g.add_argument("--data", help="folder of images (recursive) or .tar/.tar.gz archive")
    g.add_argument(
        "--knn-train", help="labelled images for the kNN memory bank (default: --data, if labelled)"
    )
    g.add_argument("--knn-test", help="labelled images to evaluate (class sub-folders)")
    g.add_argument("--out-dir", default=d.out_dir, help="run directory: checkpoints, logs, plots")
    g.add_argument(
        "--cache-dir",
        default=d.cache_dir,
        help="decoded-image cache (default ~/.cache/simclr-search)",
    )
    g.add_argument("--workers", type=int, default=d.workers, help="decode processes")
    g = p.add_argument_group("model")
    g.add_argument("--encoder", default=d.encoder, choices=ENCODERS)
    g.add_argument("--width", type=int, default=d.width, help="compact encoder's stem width")
    g.add_argument(
        "--small-stem", type=_bool, default=d.small_stem, help="ResNets: 3x3/1 stem, no max-pool"
    )
    g.add_argument(
        "--proj-hidden-dim", type=int, default=d.proj_hidden_dim, help="0: the encoder's width"
    )
    g.add_argument("--proj-out-dim", type=int, default=d.proj_out_dim)
    g = p.add_argument_group("views")
    g.add_argument("--input-size", type=int, default=d.input_size)
    g.add_argument(
        "--view-size",
        type=int,
        default=d.view_size,
        help="side of the training views (0: --input-size); smaller trains faster",
    )
    g.add_argument(
        "--crop-min-scale", type=float, default=d.crop_min_scale, help="0.08 for large images"
    )
    g.add_argument(
        "--jitter-strength", type=float, default=d.jitter_strength, help="colour jitter s"
    )
    g.add_argument(
        "--blur-p", type=float, default=d.blur_p, help="0.5 for large images, 0 for 32 px"
    )
    g.add_argument("--rotation-degrees", type=float, default=d.rotation_degrees)
    g.add_argument(
        "--noise-p", type=float, default=d.noise_p, help="extra: additive Gaussian noise views"
    )
    g.add_argument("--mean", type=float, nargs=3, default=d.mean)
    g.add_argument("--std", type=float, nargs=3, default=d.std)
    g = p.add_argument_group("optimisation")
    g.add_argument("--temperature", type=float, default=d.temperature)
    g.add_argument("--optimizer", default=d.optimizer, choices=OPTIMIZERS)
    g.add_argument(
        "--lr", type=float, default=d.lr, help="base learning rate, scaled by --lr-scaling"
    )
    g.add_argument("--lr-scaling", default=d.lr_scaling, choices=LR_SCALINGS)
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--momentum", type=float, default=d.momentum)
    g.add_argument(
        "--batch-size", type=int, default=d.batch_size, help="images per process (2 views each)"
    )
    g.add_argument("--epochs", type=int, default=d.epochs)
    g.add_argument(
        "--time-budget-min",
        type=float,
        default=d.time_budget_min,
        help="fit the whole run (training + evaluation) in this many minutes; overrides --epochs",
    )
    g.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    g = p.add_argument_group("execution")
    g.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:N")
    g.add_argument("--precision", default=d.precision, choices=PRECISIONS)
    g.add_argument("--channels-last", type=_bool, default=d.channels_last)
    g.add_argument(
        "--compile", type=_bool, default=d.compile, help="torch.compile the training step's model"
    )
    g.add_argument("--sync-bn", type=_bool, default=d.sync_bn, help="SyncBatchNorm under torchrun")
    g.add_argument(
        "--threads", type=int, default=d.threads, help="torch intra-op threads (0: all cores)"
    )
    g.add_argument("--seed", type=int, default=d.seed)
    g = p.add_argument_group("checkpoints and evaluation")
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps")
    g.add_argument(
        "--keep-checkpoints",
        type=int,
        default=d.keep_checkpoints,
        help="step-numbered checkpoints kept beside checkpoint.pt (the latest)",
    )
    g.add_argument("--resume", default=d.resume, help="checkpoint to continue exactly from")
    g.add_argument("--log-every", type=int, default=d.log_every, help="steps")
    g.add_argument(
        "--eval-every", type=int, default=d.eval_every, help="epochs (0: only at the end)"
    )
    g.add_argument("--knn-k", type=int, default=d.knn_k)
    g.add_argument("--knn-temperature", type=float, default=d.knn_temperature)
    g.add_argument(
        "--max-steps",
        type=int,
        default=d.max_steps,
        help="stop after this many steps (0: no limit)",
    )
    g.add_argument("--progress", type=_bool, default=d.progress)
    g.add_argument("--tensorboard", type=_bool, default=d.tensorboard)
    return p


def config_from_args(args: argparse.Namespace, argv: list[str] | None = None) -> TrainConfig:
    """Defaults < config file < flags given explicitly on the command line."""
    values: dict[str, Any] = {}
    if args.config:
        values.update(load_config_file(args.config))
    explicit = _explicit_flags(argv if argv is not None else sys.argv[1:])
    for key, value in vars(args).items():
        if key == "config" or value is None:
            continue
        if key not in values or key in explicit:
            values[key] = value
    for key in ("mean", "std"):
        values[key] = tuple(values.get(key, getattr(TrainConfig(), key)))
    return TrainConfig(**values)


def _explicit_flags(argv: list[str]) -> set[str]:
    return {a[2:].split("=")[0].replace("-", "_") for a in argv if a.startswith("--")}
