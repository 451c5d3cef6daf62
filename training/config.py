"""The typed configuration of a training run, and loading it from a file.

One config story: every field has a flag with a sane default (``simclr train --help``); a TOML or
JSON file given with ``--config`` replaces those defaults; flags given on the command line win over
the file. The resolved config is saved in ``config.json`` and in every checkpoint.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from simclr_search.settings import field_names as setting_names
from simclr_search.settings import setting
from simclr_search.training.augment import AugmentConfig
from simclr_search.training.models.encoders import ENCODERS
from simclr_search.training.optim import LR_SCALINGS, OPTIMIZERS
from simclr_search.training.precision import PRECISIONS

DATA, MODEL, VIEWS, OPTIM = "data", "model", "views", "optimisation"
EXECUTION, CHECKPOINTS = "execution", "checkpoints and evaluation"


def cache_size_for(input_size: int) -> int:
    """Side of the decoded-image cache: the input size for small inputs, 8/7 of it for larger ones
    (room for random resized crops, as 256 is to 224)."""
    return input_size if input_size <= 64 else round(input_size * 8 / 7)


@dataclass
class TrainConfig:
    # data
    data: str = setting("", "folder of images (recursive) or .tar/.tar.gz archive", group=DATA)
    knn_train: str = setting(
        "", "labelled images for the kNN memory bank (default: --data, if labelled)", group=DATA
    )
    knn_test: str = setting("", "labelled images to evaluate (class sub-folders)", group=DATA)
    out_dir: str = setting("runs/simclr", "run directory: checkpoints, logs, plots", group=DATA)
    cache_dir: str = setting("", "decoded-image cache (default ~/.cache/simclr-search)", group=DATA)
    workers: int = setting(2, "decode processes", group=DATA)
    # model
    encoder: str = setting("compact", "encoder architecture", choices=ENCODERS, group=MODEL)
    width: int = setting(32, "compact encoder's stem width", group=MODEL)
    small_stem: bool = setting(True, "ResNets: 3x3/1 stem, no max-pool", group=MODEL)
    proj_hidden_dim: int = setting(
        0, "projection head's hidden width (0: the encoder's width)", group=MODEL
    )
    proj_out_dim: int = setting(128, "projection head's output width (z)", group=MODEL)
    # views
    input_size: int = setting(32, "side of the images the encoder embeds", group=VIEWS)
    # Smaller views cost (view/input)^2 of the FLOPs, so a time budget buys more epochs; the
    # encoder (global pooling) still embeds input_size images.
    view_size: int = setting(
        0, "side of the training views (0: --input-size); smaller trains faster", group=VIEWS
    )
    crop_min_scale: float = setting(
        0.2, "random resized crop's smallest area (0.08 for large images)", group=VIEWS
    )
    jitter_strength: float = setting(0.5, "colour jitter strength s", group=VIEWS)
    blur_p: float = setting(0.0, "Gaussian blur probability (0.5 for large images)", group=VIEWS)
    rotation_degrees: float = setting(0.0, "extra: random rotation up to this", group=VIEWS)
    noise_p: float = setting(0.0, "extra: additive Gaussian noise probability", group=VIEWS)
    mean: tuple[float, float, float] = setting(
        (0.4914, 0.4822, 0.4465),
        "per-channel mean the encoder's input is normalised by",
        group=VIEWS,
    )
    std: tuple[float, float, float] = setting(
        (0.2470, 0.2435, 0.2616), "per-channel standard deviation", group=VIEWS
    )
    # objective and optimisation
    temperature: float = setting(0.2, "NT-Xent temperature tau", group=OPTIM)
    optimizer: str = setting("sgd", "optimiser", choices=OPTIMIZERS, group=OPTIM)
    lr: float = setting(0.06, "base learning rate, scaled by --lr-scaling", group=OPTIM)
    lr_scaling: str = setting(
        "linear",
        "scale --lr by batch/256 (linear), its square root (sqrt) or not (none)",
        choices=LR_SCALINGS,
        group=OPTIM,
    )
    weight_decay: float = setting(5e-4, "weight decay", group=OPTIM)
    momentum: float = setting(0.9, "SGD / LARS momentum", group=OPTIM)
    batch_size: int = setting(256, "images per process (2 views each)", group=OPTIM)
    epochs: int = setting(20, "epochs (unless --time-budget-min)", group=OPTIM)
    time_budget_min: float = setting(
        0.0,
        "fit the whole run (training + evaluation) in this many minutes; overrides --epochs",
        group=OPTIM,
    )
    warmup_epochs: float = setting(1.0, "linear warm-up before the cosine decay", group=OPTIM)
    # execution
    device: str = setting("auto", "auto, cpu, cuda, cuda:N", group=EXECUTION)
    precision: str = setting(
        "auto", "bf16 where the device has it, else fp32", choices=PRECISIONS, group=EXECUTION
    )
    channels_last: bool = setting(True, "channels-last memory format", group=EXECUTION)
    compile: bool = setting(False, "torch.compile the training step's model", group=EXECUTION)
    sync_bn: bool = setting(False, "SyncBatchNorm under torchrun (CUDA)", group=EXECUTION)
    threads: int = setting(0, "torch intra-op threads (0: all cores)", group=EXECUTION)
    seed: int = setting(0, "seed of the views, batches and initialisation", group=EXECUTION)
    # checkpoints, logs, evaluation
    checkpoint_every: int = setting(500, "steps between checkpoints", group=CHECKPOINTS)
    keep_checkpoints: int = setting(
        2, "step-numbered checkpoints kept beside checkpoint.pt (the latest)", group=CHECKPOINTS
    )
    resume: str = setting("", "checkpoint to continue exactly from", group=CHECKPOINTS)
    log_every: int = setting(10, "steps between log lines", group=CHECKPOINTS)
    eval_every: int = setting(
        5, "epochs between kNN evaluations (0: only at the end)", group=CHECKPOINTS
    )
    knn_k: int = setting(200, "neighbours of the kNN monitor", group=CHECKPOINTS)
    knn_temperature: float = setting(0.1, "kNN vote temperature", group=CHECKPOINTS)
    max_steps: int = setting(0, "stop after this many steps (0: no limit)", group=CHECKPOINTS)
    progress: bool = setting(True, "progress bars", group=CHECKPOINTS)
    tensorboard: bool = setting(True, "TensorBoard event files in --out-dir", group=CHECKPOINTS)

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
    return setting_names(TrainConfig)


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
