"""``simclr train-decoder``: learn h -> image on top of a frozen, trained encoder.

Loss: L1 between the reconstruction and the image, plus (``--perceptual-weight``) a perceptual term
computed with the frozen encoder itself: ``1 - cos(h(reconstruction), h(image))`` — no downloaded
weights. The decoder sees L2-normalised h, exactly what the exported encoder serves, so a stored
vector can be reconstructed. Evaluation: mean PSNR and SSIM on ``--test`` and a PNG grid of
originals (top rows) above their reconstructions.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from simclr_search.settings import add_arguments, from_args, setting
from simclr_search.training.checkpoint import load_checkpoint, save_checkpoint
from simclr_search.training.data.batches import BatchReader
from simclr_search.training.data.library import build_library
from simclr_search.training.image_metrics import psnr, ssim
from simclr_search.training.models.decoder import Decoder
from simclr_search.training.models.simclr import model_from_checkpoint
from simclr_search.training.precision import PRECISIONS, autocast, resolve_precision, select_device

log = logging.getLogger("simclr.decoder")


@dataclass
class DecoderTrainConfig:
    """A decoder training run; ``simclr train-decoder``'s flags are made from these fields."""

    checkpoint: str = setting(help="trained encoder checkpoint (simclr train)")
    data: str = setting(help="images to train on (folder or archive)")
    out_dir: str = setting("runs/decoder", "run directory: decoder.pt, reconstructions.png")
    test: str = setting("", "images to evaluate on (default: --data)")
    epochs: int = setting(10, "passes over the library")
    max_steps: int = setting(0, "stop after this many steps instead (0: --epochs)")
    batch_size: int = setting(256, "images per step")
    lr: float = setting(2e-3, "peak learning rate (AdamW, one-cycle)")
    width: int = setting(256, "decoder width")
    perceptual_weight: float = setting(
        0.1, "weight of 1 - cos(h(reconstruction), h(image)) beside the L1 loss"
    )
    device: str = setting("auto", "auto, cpu, cuda, cuda:N")
    precision: str = setting("auto", "bf16 where the device has it", choices=PRECISIONS)
    cache_dir: str = setting("", "decoded-image cache (default ~/.cache/simclr-search)")
    seed: int = setting(0, "seed of the batches and initialisation")
    progress: bool = setting(True, "progress bar")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="train a decoder (embedding -> image)", add_help=add_help
    )
    add_arguments(p, DecoderTrainConfig)
    return p


class FrozenEncoder:
    """The trained encoder in eval mode: ``(B, 3, S, S)`` in [0, 1] -> L2-normalised h ``(B, D)``."""

    def __init__(self, state: dict[str, Any], device: torch.device) -> None:
        self.model = model_from_checkpoint(state).to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        facts = state["preprocessing"]
        self.mean = torch.tensor(facts["mean"], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(facts["std"], device=device).view(1, 3, 1, 1)
        self.size = int(facts["input_size"])
        self.dim = int(facts["embedding_dim"])

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(
            self.model.forward_features((pixels - self.mean) / self.std).float(), dim=1
        )


def _pixels(batch_uint8: torch.Tensor, device: torch.device) -> torch.Tensor:
    return batch_uint8.to(device).float().div_(255.0)


def _train_steps(
    cfg: DecoderTrainConfig,
    decoder: Decoder,
    encoder: FrozenEncoder,
    reader: BatchReader,
    total: int,
    device: torch.device,
    precision: str,
) -> list[float]:
    """``total`` steps of L1 (+ perceptual) loss; returns the losses."""
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=cfg.lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.lr, total_steps=total, pct_start=0.1
    )
    losses = []
    for step in tqdm(range(total), desc="decoder", disable=not cfg.progress, mininterval=1.0):
        x = _pixels(reader.read(step), device)
        if step % 2:  # flips are free data: h is flip-invariant by training
            x = x.flip(-1)
        with torch.no_grad(), autocast(device, precision):
            h = encoder(x)
        with autocast(device, precision):
            recon = decoder(h).float()
            loss = F.l1_loss(recon, x)
            if cfg.perceptual_weight > 0:
                loss = loss + cfg.perceptual_weight * (1 - (encoder(recon) * h).sum(1)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return losses


def train_decoder(cfg: DecoderTrainConfig) -> dict[str, Any]:
    """Train on ``cfg.data``, save ``decoder.pt``, evaluate; returns the run's summary."""
    torch.manual_seed(cfg.seed)
    device = select_device(cfg.device)
    precision = resolve_precision(device, cfg.precision)
    state = load_checkpoint(cfg.checkpoint)
    encoder = FrozenEncoder(state, device)
    cache_dir = cfg.cache_dir or None
    library = build_library(cfg.data, encoder.size, cache_dir, progress=cfg.progress)
    decoder = Decoder(encoder.dim, encoder.size, cfg.width).to(device)
    reader = BatchReader(library, min(cfg.batch_size, len(library)), cfg.seed)
    total = cfg.max_steps if cfg.max_steps else cfg.epochs * reader.steps_per_epoch
    started = time.perf_counter()
    losses = _train_steps(cfg, decoder, encoder, reader, total, device, precision)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        out / "decoder.pt",
        {
            "kind": "decoder",
            "decoder": decoder.state_dict(),
            "step": total,
            "config": {
                "embed_dim": encoder.dim,
                "image_size": encoder.size,
                "width": cfg.width,
                "perceptual_weight": cfg.perceptual_weight,
                "encoder_checkpoint": str(cfg.checkpoint),
            },
            "preprocessing": state["preprocessing"],
        },
    )
    metrics = evaluate_decoder(
        decoder,
        encoder,
        cfg.test or cfg.data,
        out / "reconstructions.png",
        device,
        precision,
        cache_dir,
    )
    summary = {
        "steps": total,
        "seconds": time.perf_counter() - started,
        "first_loss": losses[0],
        "final_loss": float(np.mean(losses[-10:])),
        **metrics,
        "decoder": str(out / "decoder.pt"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


@torch.no_grad()
def evaluate_decoder(
    decoder: Decoder,
    encoder: FrozenEncoder,
    source: str,
    grid_path: Path,
    device: torch.device,
    precision: str,
    cache_dir: str | None = None,
    limit: int = 10_000,
) -> dict[str, float]:
    """Mean PSNR / SSIM of reconstructions of ``source`` (first ``limit`` images) and a PNG grid."""
    import torchvision

    decoder.eval()
    library = build_library(source, encoder.size, cache_dir, progress=False)
    scores_psnr, scores_ssim = [], []
    first = None
    for start in range(0, min(limit, len(library)), 512):
        batch = torch.from_numpy(np.array(library.images[start : min(start + 512, limit)])).permute(
            0, 3, 1, 2
        )
        x = _pixels(batch, device)
        with autocast(device, precision):
            recon = decoder(encoder(x)).float()
        scores_psnr.append(psnr(recon, x))
        scores_ssim.append(ssim(recon, x))
        if first is None:
            first = (x[:16].cpu(), recon[:16].cpu())
    torchvision.utils.save_image(torch.cat(first), grid_path, nrow=16, padding=1)
    decoder.train()
    return {
        "psnr_db": float(torch.cat(scores_psnr).mean()),
        "ssim": float(torch.cat(scores_ssim).mean()),
        "grid": str(grid_path),
    }


def load_decoder(path: str) -> tuple[Decoder, dict[str, Any]]:
    state = load_checkpoint(path, kind="decoder")
    cfg = state["config"]
    decoder = Decoder(cfg["embed_dim"], cfg["image_size"], cfg["width"])
    decoder.load_state_dict(state["decoder"])
    return decoder.eval(), state


def cli_main(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    print(json.dumps(train_decoder(from_args(DecoderTrainConfig, args))))
    return 0
