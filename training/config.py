"""The typed configuration of a training run, and loading it from a file.

One config story: every field has a flag with a sane default (``simclr train --help``); a TOML or
JSON file given with ``--config`` replaces those defaults; flags given on the command line win over
the file. The resolved config is saved in ``config.json`` and in every checkpoint.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from simclr_search.training.augment import AugmentConfig


def cache_size_for(input_size: int) -> int:
    """Side of the decoded-image cache: the input size for small inputs, 8/7 of it for larger ones
    (room for random resized crops, as 256 is to 224)."""
    return input_size if input_size <= 64 else round(input_size * 8 / 7)


@dataclass
class TrainConfig:
    # data
    data: str = ""
    knn_train: str = ""
    knn_test: str = ""
    out_dir: str = "runs/simclr"
    cache_dir: str = ""
    workers: int = 2
    # model
    encoder: str = "compact"
    width: int = 32
    small_stem: bool = True
    proj_hidden_dim: int = 0
    proj_out_dim: int = 128
    # views
    input_size: int = 32
    # Side of the training views (0: input_size). Smaller views cost (view/input)^2 of the FLOPs, so
    # a time budget buys more epochs; the encoder (global pooling) still embeds input_size images.
    view_size: int = 0
    crop_min_scale: float = 0.2
    jitter_strength: float = 0.5
    blur_p: float = 0.0
    rotation_degrees: float = 0.0
    noise_p: float = 0.0
    mean: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
    std: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
    # objective and optimisation
    temperature: float = 0.2
    optimizer: str = "sgd"
    lr: float = 0.06
    lr_scaling: str = "linear"
    weight_decay: float = 5e-4
    momentum: float = 0.9
    batch_size: int = 256
    epochs: int = 20
    time_budget_min: float = 0.0
    warmup_epochs: float = 1.0
    # execution
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    sync_bn: bool = False
    threads: int = 0
    seed: int = 0
    # checkpoints, logs, evaluation
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    resume: str = ""
    log_every: int = 10
    eval_every: int = 5
    knn_k: int = 200
    knn_temperature: float = 0.1
    max_steps: int = 0
    progress: bool = True
    tensorboard: bool = True

    @property
    def cache_size(self) -> int:
        """Side of the decoded-image cache: the input size for small inputs, 8/7 of it for larger."""
        return cache_size_for(self.input_size)

    def augment_config(self) -> AugmentConfig:
        return AugmentConfig(
            input_size=self.view_size or self.input_size,
            scale=(self.crop_min_scale, 1.0),
            jitter_strength=self.jitter_strength,
            blur_p=self.blur_p,
            rotation_degrees=self.rotation_degrees,
            noise_p=self.noise_p,
            mean=tuple(self.mean),
            std=tuple(self.std),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def field_names() -> set[str]:
    return {f.name for f in fields(TrainConfig)}


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON run config; keys are TrainConfig fields (dashes or underscores)."""
    path = Path(path)
    text = path.read_text()
    data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    data = {key.replace("-", "_"): value for key, value in data.items()}
    unknown = sorted(set(data) - field_names())
    if unknown:
        raise ValueError(f"{path}: unknown config keys {unknown}; see 'simclr train --help'")
    return data
