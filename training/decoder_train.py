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
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from simclr_search.training.checkpoint import load_checkpoint, save_checkpoint
from simclr_search.training.data.batches import BatchReader
from simclr_search.training.data.library import build_library
from simclr_search.training.image_metrics import psnr, ssim
from simclr_search.training.models.decoder import Decoder
from simclr_search.training.models.simclr import model_from_checkpoint
from simclr_search.training.precision import PRECISIONS, autocast, resolve_precision, select_device
from tqdm import tqdm

log = logging.getLogger("simclr.decoder")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="train a decoder (embedding -> image)", add_help=add_help
    )
    p.add_argument("--checkpoint", required=True, help="trained encoder checkpoint (simclr train)")
    p.add_argument("--data", required=True, help="images to train on (folder or archive)")
    p.add_argument("--test", default="", help="images to evaluate on (default: --data)")
    p.add_argument("--out-dir", default="runs/decoder")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--max-steps", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--perceptual-weight", type=float, default=0.1)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    p.add_argument("--cache-dir", default="")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", type=lambda v: v.lower() in {"1", "true", "yes"}, default=True)
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


def train_decoder(
    checkpoint: str,
    data: str,
    out_dir: str,
    test: str = "",
    epochs: int = 10,
    max_steps: int = 0,
    batch_size: int = 256,
    lr: float = 2e-3,
    width: int = 256,
    perceptual_weight: float = 0.1,
    device_name: str = "auto",
    precision: str = "auto",
    cache_dir: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    torch.manual_seed(seed)
    device = select_device(device_name)
    precision = resolve_precision(device, precision)
    state = load_checkpoint(checkpoint)
    encoder = FrozenEncoder(state, device)
    library = build_library(data, encoder.size, cache_dir, progress=progress)
    decoder = Decoder(encoder.dim, encoder.size, width).to(device)
    reader = BatchReader(library, min(batch_size, len(library)), seed)
    total = max_steps if max_steps else epochs * reader.steps_per_epoch
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=total, pct_start=0.1
    )
    started = time.perf_counter()
    losses = []
    for step in tqdm(range(total), desc="decoder", disable=not progress, mininterval=1.0):
        x = _pixels(reader.read(step), device)
        if step % 2:  # flips are free data: h is flip-invariant by training
            x = x.flip(-1)
        with torch.no_grad(), autocast(device, precision):
            h = encoder(x)
        with autocast(device, precision):
            recon = decoder(h).float()
            loss = F.l1_loss(recon, x)
            if perceptual_weight > 0:
                loss = loss + perceptual_weight * (1 - (encoder(recon) * h).sum(1)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    out = Path(out_dir)
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
                "width": width,
                "perceptual_weight": perceptual_weight,
                "encoder_checkpoint": str(checkpoint),
            },
            "preprocessing": state["preprocessing"],
        },
    )
    metrics = evaluate_decoder(
        decoder, encoder, test or data, out / "reconstructions.png", device, precision, cache_dir
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
    summary = train_decoder(
        args.checkpoint,
        args.data,
        args.out_dir,
        args.test,
        args.epochs,
        args.max_steps,
        args.batch_size,
        args.lr,
        args.width,
        args.perceptual_weight,
        args.device,
        args.precision,
        args.cache_dir or None,
        args.seed,
        args.progress,
    )
    print(json.dumps(summary))
    return 0
