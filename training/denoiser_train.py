"""``simclr train-denoiser``: learn noisy -> clean on the user's own images (Gaussian sigma 0-55).

The library is decoded once to ``patch_size`` squares (the same cache as SimCLR training); each step
takes a batch, applies one of the 8 flips/rotations, lays the images in 2x2 mosaics (``--mosaic``:
pixels far from any edge, which thumbnails alone lack), adds noise to all but ``--clean-p`` of them
(``training.noise``) and minimises L1 between the denoised and the clean image. Blind and non-blind
in one network: the noise level is shown for half of the images (``--known-p``; FFDNet's noise map,
Zhang et al. 2018). ``--minutes`` sets a time budget: the learning-rate schedule (linear warm-up,
cosine decay) follows the clock and ends with the budget. The evaluation sets (``--eval``, e.g.
Kodak24) are for measuring only, never training.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from simclr_search.settings import add_arguments, from_args, setting
from simclr_search.training.checkpoint import load_checkpoint, save_checkpoint
from simclr_search.training.data.batches import BatchReader
from simclr_search.training.data.library import ImageLibrary, build_library
from simclr_search.training.denoise_eval import evaluate_method, load_eval_set, torch_method
from simclr_search.training.ema import WeightAverage
from simclr_search.training.models.denoiser import Denoiser
from simclr_search.training.noise import corrupt, dihedral, mosaic
from simclr_search.training.precision import PRECISIONS, autocast, resolve_precision, select_device
from simclr_search.training.run_log import RunLog

log = logging.getLogger("simclr.denoiser")
LOG_EVERY = 50  # steps


def _widths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(w) for w in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"widths must look like 32,64,128,256: {text!r}") from exc


@dataclass
class DenoiserTrainConfig:
    """A denoiser training run; ``simclr train-denoiser``'s flags are made from these fields."""

    data: str = setting(help="clean images to train on (folder or archive)")
    out_dir: str = setting("runs/denoiser", "run directory: denoiser.pt, logs")
    minutes: float = setting(0.0, "time budget (0: use --steps)")
    steps: int = setting(2000, "steps, without a time budget")
    batch_size: int = setting(64, "library images per step")
    patch_size: int = setting(32, "images are decoded to this square")
    lr: float = setting(2e-3, "peak learning rate (AdamW)")
    widths: tuple[int, ...] = setting(
        (32, 64, 128, 256), "U-Net widths, comma-separated", parse=_widths, metavar="W1,W2,..."
    )
    weights: str = setting(
        "", "continue from a trained denoiser checkpoint (same widths; a fresh schedule)"
    )
    max_sigma: float = setting(55.0, "noise levels drawn from 0 to this (0-255 scale)")
    known_p: float = setting(0.5, "share of images told their sigma")
    poisson_p: float = setting(0.0, "share of images with Poisson (shot) noise instead")
    jpeg_p: float = setting(0.0, "share of images re-encoded as JPEG after the noise")
    clean_p: float = setting(
        0.1, "share of training inputs shown without noise (a clean photo must come back as it was)"
    )
    ema: float = setting(
        0.0, "save a running average of the weights with this decay per step (0: off)"
    )
    mosaic: int = setting(
        2, "train on N x N mosaics of library images, N * patch-size px (1: single images)"
    )
    eval_images: str = setting(
        "", "clean images to evaluate on at the end (e.g. Kodak24)", name="eval"
    )
    eval_sigma: float = setting(25.0, "noise level of the evaluation")
    eval_limit: int = setting(0, "evaluate on the first N images only (0: all)")
    device: str = setting("auto", "auto, cpu, cuda, cuda:N")
    precision: str = setting("auto", "bf16 where the device has it", choices=PRECISIONS)
    cache_dir: str = setting("", "decoded-image cache (default ~/.cache/simclr-search)")
    seed: int = setting(0, "seed of the batches, noise and initialisation")
    progress: bool = setting(True, "progress bar")

    def check(self) -> None:
        """Refuse impossible settings before anything is decoded."""
        if self.minutes < 0 or self.steps <= 0 or self.batch_size <= 0:
            raise ValueError("minutes must be >= 0 and steps, batch size > 0")
        check_mosaic(self.mosaic, self.batch_size)
        if not 0 <= self.clean_p <= 1:
            raise ValueError(f"--clean-p must be in [0, 1], got {self.clean_p}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"--ema must be in [0, 1) (0: off), got {self.ema}")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="train a denoiser (noisy image -> clean image)", add_help=add_help
    )
    add_arguments(p, DenoiserTrainConfig)
    return p


def check_mosaic(tiles: int, batch_size: int) -> None:
    if tiles < 1 or tiles**2 > batch_size:
        raise ValueError(
            f"--mosaic {tiles} needs {tiles**2} images per batch, the batch holds {batch_size}: "
            "use a smaller --mosaic or a larger batch/library"
        )


def learning_rate(progress: float, peak: float, warmup: float = 0.02) -> float:
    """Linear warm-up over the first ``warmup`` of the run, then cosine decay to 0 at ``progress`` 1."""
    if progress < warmup:
        return peak * (progress + 1e-3) / warmup
    rest = min(1.0, (progress - warmup) / (1 - warmup))
    return peak * 0.5 * (1 + math.cos(math.pi * rest))


def _starting_model(cfg: DenoiserTrainConfig) -> tuple[Denoiser, int]:
    """A fresh denoiser, or the ``--weights`` one; and the steps those weights were trained for."""
    model = Denoiser(cfg.widths)
    if not cfg.weights:
        return model, 0
    previous, state = load_denoiser(cfg.weights)
    if previous.widths != model.widths:
        raise ValueError(f"--weights has widths {previous.widths}, not {model.widths}")
    model.load_state_dict(previous.state_dict())
    return model, int(state["step"]) + int(state["config"].get("steps_before", 0))


@dataclass
class _Progress:
    steps: int
    seconds: float
    losses: list[float]


def _train_steps(
    cfg: DenoiserTrainConfig,
    model: Denoiser,
    reader: BatchReader,
    device: torch.device,
    precision: str,
    run_log: RunLog,
    average: WeightAverage | None,
) -> _Progress:
    """The training loop: until ``cfg.minutes`` have passed, or ``cfg.steps`` without a budget."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(cfg.seed)
    budget = cfg.minutes * 60
    started = time.perf_counter()
    losses: list[float] = []
    bar = tqdm(total=None if cfg.minutes else cfg.steps, desc="denoiser", disable=not cfg.progress)
    step = 0
    while True:
        # With a time budget the schedule follows the clock, not a step count fixed up front, so a
        # machine that slows down mid-run (other jobs) still ends on time with a finished schedule.
        done = (time.perf_counter() - started) / budget if cfg.minutes else step / cfg.steps
        if done >= 1:
            break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(done, cfg.lr)
        clean = mosaic(dihedral(reader.read(step).float().div_(255.0), generator), cfg.mosaic)
        noise_free = torch.rand(len(clean), generator=generator) < cfg.clean_p
        noisy, sigma = corrupt(
            clean, generator, cfg.max_sigma, cfg.known_p, cfg.poisson_p, cfg.jpeg_p, noise_free
        )
        clean = clean.to(device, memory_format=torch.channels_last)
        noisy = noisy.to(device, memory_format=torch.channels_last)
        with autocast(device, precision):
            objective = F.l1_loss(model(noisy, sigma.to(device)).float(), clean)
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        if average is not None:
            average.update(model)
        losses.append(objective.item())
        if step % LOG_EVERY == 0:
            recent = float(np.mean(losses[-LOG_EVERY:]))
            elapsed = time.perf_counter() - started
            run_log.write(
                "train",
                step,
                loss=recent,
                lr=optimizer.param_groups[0]["lr"],
                images_per_s=(step + 1) * reader.batch_size / elapsed,
            )
            bar.set_postfix(loss=f"{recent:.4f}")
        bar.update(1)
        step += 1
    bar.close()
    return _Progress(step, time.perf_counter() - started, losses)


def _saved_config(
    cfg: DenoiserTrainConfig, model: Denoiser, batch_size: int, steps_before: int
) -> dict[str, Any]:
    """What the checkpoint records of its run: the settings, plus the facts a loader needs."""
    return {
        **asdict(cfg),
        "widths": list(model.widths),
        "mean": model.mean.flatten().tolist(),
        "std": model.std.flatten().tolist(),
        "batch_size": batch_size,
        "steps_before": steps_before,
        "loss": "l1",
    }


def _evaluate(cfg: DenoiserTrainConfig, model: Denoiser) -> dict[str, float]:
    """Mean PSNR / SSIM on ``cfg.eval_images`` at ``cfg.eval_sigma``, blind and told the level."""
    images = load_eval_set(cfg.eval_images, cfg.eval_limit)
    method = torch_method(model)
    out = {}
    for known in (False, True):
        scores = evaluate_method(method, images, cfg.eval_sigma, known=known)
        name = "known" if known else "blind"
        out[f"eval_{name}_psnr"], out[f"eval_{name}_ssim"] = scores["psnr"], scores["ssim"]
    return out


def train_denoiser(cfg: DenoiserTrainConfig) -> dict[str, Any]:
    """Train, save ``denoiser.pt`` in ``cfg.out_dir``, evaluate; returns the run's summary."""
    cfg.check()
    torch.manual_seed(cfg.seed)
    device = select_device(cfg.device)
    precision = resolve_precision(device, cfg.precision)
    library: ImageLibrary = build_library(
        cfg.data, cfg.patch_size, cfg.cache_dir or None, progress=cfg.progress
    )
    model, steps_before = _starting_model(cfg)
    model = model.to(device).to(memory_format=torch.channels_last)
    reader = BatchReader(library, min(cfg.batch_size, len(library)), cfg.seed)
    check_mosaic(cfg.mosaic, reader.batch_size)  # again: a small library shrinks the batch
    average = WeightAverage(model, cfg.ema) if cfg.ema else None
    out = Path(cfg.out_dir)
    run_log = RunLog(out, tensorboard=False)
    run = _train_steps(cfg, model, reader, device, precision, run_log, average)
    model = model.to("cpu", memory_format=torch.contiguous_format).eval()
    if average is not None:  # save the average, not the last step's weights
        model.load_state_dict(average.state_dict())
    config = _saved_config(cfg, model, reader.batch_size, steps_before)
    save_checkpoint(
        out / "denoiser.pt",
        {"kind": "denoiser", "denoiser": model.state_dict(), "step": run.steps, "config": config},
    )
    summary: dict[str, Any] = {
        "steps": run.steps,
        "seconds": run.seconds,
        "images_per_s": run.steps * reader.batch_size / run.seconds,
        "epochs": run.steps * reader.batch_size / len(library),
        "first_loss": float(np.mean(run.losses[:10])),
        "final_loss": float(np.mean(run.losses[-LOG_EVERY:])),
        "denoiser": str(out / "denoiser.pt"),
    }
    if cfg.eval_images:
        summary.update(_evaluate(cfg, model))
    run_log.write("summary", run.steps, **{k: v for k, v in summary.items() if k != "denoiser"})
    run_log.close()
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def load_denoiser(path: str) -> tuple[Denoiser, dict[str, Any]]:
    state = load_checkpoint(path, kind="denoiser")
    cfg = state["config"]
    model = Denoiser(tuple(cfg["widths"]), tuple(cfg["mean"]), tuple(cfg["std"]))
    model.load_state_dict(state["denoiser"])
    return model.eval(), state


def cli_main(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    print(json.dumps(train_denoiser(from_args(DenoiserTrainConfig, args))))
    return 0
