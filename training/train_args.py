"""The command line of ``simclr train``: flags made from :class:`TrainConfig`, and a config file.

Precedence: the dataclass defaults < a TOML / JSON ``--config`` file < flags given explicitly on the
command line (so a file can set ``batch-size = 512`` and one run can still override it).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from simclr_search.settings import add_arguments, explicit_settings, from_args
from simclr_search.training.config import TrainConfig, load_config_file


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Train a SimCLR encoder on a folder of images", add_help=add_help
    )
    p.add_argument("--config", help="TOML or JSON file whose keys set this run's defaults")
    add_arguments(p, TrainConfig)
    return p


def config_from_args(args: argparse.Namespace, argv: list[str] | None = None) -> TrainConfig:
    """Defaults < config file < flags given explicitly on the command line."""
    flags = from_args(TrainConfig, args)
    if not args.config:
        return flags
    values: dict[str, Any] = load_config_file(args.config)
    explicit = explicit_settings(TrainConfig, argv if argv is not None else sys.argv[1:])
    for key, value in vars(flags).items():
        if key not in values or key in explicit:
            values[key] = value
    for key in ("mean", "std"):
        values[key] = tuple(values[key])
    return TrainConfig(**values)
