"""``simclr export``: a trained checkpoint -> a model bundle (ONNX files + ``manifest.json``).

Steps: fold BatchNorm into the convolutions (torch.fx), export with a dynamic batch axis at opset
17, run ``onnx.checker``, then compare ONNX Runtime against PyTorch on real images and refuse the
bundle if they disagree (max |diff| > 1e-4 or cosine < 0.99999). Optionally writes a static INT8
(QDQ, per-channel) encoder calibrated on a sample of the user's images. The encoder outputs h, the
representation before the projection head (Chen et al. 2020, Sec. 4.2), L2-normalised when
``--normalize`` is on (the default: cosine search). By default h is whitened first (``--whitening
learned``: from N sampled library images and an edited copy of each, ``--whiten-images N``; or
``pca``; ``training/whitening.py``), and the decoder file takes the whitened embeddings it is
served. The export / check / compare / INT8 steps themselves live in ``training/onnx_export.py``,
shared with the denoiser's export.
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
from simclr_search.bundle.manifest import load_manifest, write_manifest
from simclr_search.bundle.preprocess import RESIZE_POLICY, encoder_input
from simclr_search.bundle.sources import iter_image_bytes
from simclr_search.bundle.tiling import BORDER
from simclr_search.training.checkpoint import load_checkpoint
from simclr_search.training.models.simclr import model_from_checkpoint
from simclr_search.training.onnx_export import (
    OPSET,
    compare_with_onnxruntime,
    export_onnx,
    fold_batchnorm,
    quantize_int8,
    require_agreement,
)
from simclr_search.training.whitening import (
    METHODS,
    Unwhiten,
    Whiten,
    Whitening,
    fit_library_whitening,
)
from torch import nn

log = logging.getLogger("simclr.export")
WHITEN_IMAGES = 10_000


class EncoderForExport(nn.Module):
    """``(B, 3, S, S)`` normalised images -> h ``(B, D)``, optionally unit length."""

    def __init__(self, encoder: nn.Module, normalize: bool) -> None:
        super().__init__()
        self.encoder = encoder
        self.normalize = normalize

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h = self.encoder.forward_features(images)
        return F.normalize(h, dim=1) if self.normalize else h


class WhitenedEncoder(nn.Module):
    """``(B, 3, S, S)`` -> whitened unit h ``(B, D)``, optionally unit length again afterwards."""

    def __init__(self, features: nn.Module, whiten: Whiten, normalize: bool) -> None:
        super().__init__()
        self.features = features  # BatchNorm-folded, unit-length h
        self.whiten = whiten
        self.normalize = normalize

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        e = self.whiten(self.features(images))
        return F.normalize(e, dim=1) if self.normalize else e


class DecoderForExport(nn.Module):
    """Served (whitened) embeddings ``(B, D)`` -> unit h -> the decoder's ``(B, 3, S, S)``."""

    def __init__(self, unwhiten: Unwhiten, decoder: nn.Module) -> None:
        super().__init__()
        self.unwhiten = unwhiten
        self.decoder = decoder

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.unwhiten(embeddings))


def sample_images(source: str, count: int, size: int, mean, std, seed: int = 0) -> np.ndarray:
    """A uniform random sample (reservoir, seeded) of ``count`` decodable images from the whole library,
    as encoder input ``(n, 3, S, S)``: class folders in archives are ordered, so the first images are not.
    """
    rng = np.random.default_rng(seed)
    reservoir: list[bytes] = []
    for seen, (_, data) in enumerate(iter_image_bytes(source)):
        if len(reservoir) < 2 * count:
            reservoir.append(data)
        else:
            j = int(rng.integers(0, seen + 1))
            if j < 2 * count:
                reservoir[j] = data
    good = []
    for data in reservoir:
        try:
            good.append(encoder_input([data], size, mean, std)[0])
        except ValueError:
            continue
        if len(good) >= count:
            break
    if not good:
        raise ValueError(f"no decodable images in {source} for calibration / parity checks")
    return np.stack(good).astype(np.float32)


def export_decoder(
    decoder_path: str, out: Path, embeddings: np.ndarray, whitening: Whitening | None = None
) -> tuple[dict[str, Any], dict[str, float]]:
    """``decoder.onnx``: ``(batch, D)`` served embeddings -> ``(batch, 3, S, S)`` RGB in [0, 1].

    ``embeddings`` are what the encoder file serves; with ``whitening`` the file un-whitens them
    first (exactly: :class:`training.whitening.Unwhiten`), since the decoder was trained on unit h.
    """
    from simclr_search.training.decoder_train import load_decoder

    folded, state = load_decoder(decoder_path)
    from simclr_search.training.onnx_storage import round_weights_to_fp16, store_weights_as_fp16

    folded.up = fold_batchnorm(
        folded.up
    )  # the input checks in forward() keep fx off the whole module
    round_weights_to_fp16(folded)  # stored as float16, computed in float32: half the file
    if whitening is not None:
        folded = DecoderForExport(Unwhiten(whitening), folded)
    export_onnx(
        folded, torch.from_numpy(embeddings[:2]), out / "decoder.onnx", "embeddings", "images"
    )
    store_weights_as_fp16(out / "decoder.onnx")
    parity = compare_with_onnxruntime(folded, out / "decoder.onnx", embeddings[:64])
    require_agreement(parity, "decoder")
    size = state["config"]["image_size"]
    entry = {
        "path": "decoder.onnx",
        "inputs": {"embeddings": ["batch", state["config"]["embed_dim"]]},
        "outputs": {"images": ["batch", 3, size, size]},
        "output_range": [0, 1],
        "training": {"step": state["step"], "config": state["config"]},
    }
    return entry, parity


def export_bundle(
    checkpoint: str,
    out_dir: str,
    images: str,
    normalize: bool = True,
    int8: bool = False,
    calibration_count: int = 256,
    name: str = "simclr",
    version: str = "1",
    decoder: str = "",
    denoiser: str = "",
    whiten_images: int = WHITEN_IMAGES,
    progress: bool = True,
    whitening_method: str = "learned",
    denoise_border: int = BORDER,
    denoiser_from: str = "",
) -> dict[str, Any]:
    """Write the bundle to ``out_dir``; returns a report (parity per file, seconds, files).

    ``denoiser`` exports a ``simclr train-denoiser`` checkpoint; ``denoiser_from`` instead carries
    the ``denoiser.onnx`` of another bundle over unchanged (at most one of the two).
    """
    if whitening_method not in (*METHODS, "none"):
        raise ValueError(f"whitening must be one of {(*METHODS, 'none')}, got {whitening_method!r}")
    if denoiser and denoiser_from:
        raise ValueError("give a denoiser checkpoint or a bundle to carry one from, not both")
    # Read (and verify) the other bundle before writing anything: out_dir may be that folder.
    carried = load_manifest(denoiser_from) if denoiser_from else None
    if carried is not None and not carried.has("denoiser"):
        raise ValueError(f"the bundle at {denoiser_from} has no denoiser to carry over")
    state = load_checkpoint(checkpoint)
    facts = state["preprocessing"]
    size = int(facts["input_size"])
    mean, std = tuple(facts["mean"]), tuple(facts["std"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model_from_checkpoint(state)
    unit_h = fold_batchnorm(EncoderForExport(model.encoder, True))
    encoder = unit_h if normalize else fold_batchnorm(EncoderForExport(model.encoder, False))
    started = time.perf_counter()
    whitening = None
    if whiten_images > 0 and whitening_method != "none":
        whitening = fit_library_whitening(
            unit_h, images, whiten_images, size, mean, std, progress, whitening_method
        )
    if whitening is not None:
        encoder = WhitenedEncoder(unit_h, Whiten(whitening), normalize)
    sample = sample_images(images, max(calibration_count, 16), size, mean, std)
    export_onnx(encoder, torch.from_numpy(sample[:2]), out / "encoder.onnx", "images", "embeddings")
    parity = compare_with_onnxruntime(encoder, out / "encoder.onnx", sample[:64])
    require_agreement(parity, "encoder")
    files: dict[str, Any] = {
        "encoder": {
            "path": "encoder.onnx",
            "inputs": {"images": ["batch", 3, size, size]},
            "outputs": {"embeddings": ["batch", model.num_features]},
        },
    }
    report: dict[str, Any] = {"encoder_parity": parity}
    if decoder:
        with torch.no_grad():
            # What the encoder file serves: the decoder file takes exactly that.
            embeddings = encoder(torch.from_numpy(sample[:64]))
            if whitening is None:
                embeddings = F.normalize(embeddings, dim=1)  # the decoder takes unit h
        files["decoder"], report["decoder_parity"] = export_decoder(
            decoder, out, embeddings.numpy(), whitening
        )
    if denoiser:
        from simclr_search.training.export_denoiser import export_denoiser

        pixels = (
            sample[:8] * np.array(std, np.float32)[:, None, None]
            + np.array(mean, np.float32)[:, None, None]
        )
        files["denoiser"], report["denoiser_parity"] = export_denoiser(
            denoiser, out, pixels, denoise_border
        )
    if carried is not None:
        from simclr_search.training.export_denoiser import carry_denoiser

        files["denoiser"] = carry_denoiser(carried, out)
    if int8:
        quantize_int8(out / "encoder.onnx", out / "encoder.int8.onnx", sample[:calibration_count])
        files["encoder_int8"] = {
            **files["encoder"],
            "path": "encoder.int8.onnx",
            "quantization": "static QDQ int8",
        }
    manifest = {
        "model": {
            "name": name,
            "version": version,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "preprocessing": {
            "input_size": size,
            "color_order": "RGB",
            "mean": list(mean),
            "std": list(std),
            "resize": RESIZE_POLICY,
            "layout": "NCHW float32, pixels/255 then (x-mean)/std",
        },
        "embedding": {
            "dim": model.num_features,
            "normalized": normalize,
            "source": "h (before projection head)"
            + (f", whitened ({whitening.method})" if whitening is not None else ""),
            "whitening": whitening.describe() if whitening is not None else None,
        },
        "opset": OPSET,
        "training": {
            "config": state["config"],
            "step": state["step"],
            "checkpoint": str(checkpoint),
        },
        "files": files,
    }
    write_manifest(out, manifest)
    report.update(
        {"bundle": str(out), "seconds": time.perf_counter() - started, "files": sorted(files)}
    )
    return report


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="export a checkpoint to an ONNX model bundle", add_help=add_help
    )
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument(
        "--images",
        required=True,
        help="a sample of your images: parity checks and INT8 calibration",
    )
    p.add_argument(
        "--normalize",
        type=lambda v: v.lower() in {"1", "true", "yes"},
        default=True,
        help="L2-normalise embeddings (true/false)",
    )
    p.add_argument("--int8", action="store_true", help="also write a static INT8 encoder")
    p.add_argument("--calibration-count", type=int, default=256)
    p.add_argument(
        "--whiten-images",
        type=int,
        default=WHITEN_IMAGES,
        help="fit the whitening on this many sampled library images "
        "(0: serve plain h; skipped with a warning below 4 images per dimension)",
    )
    p.add_argument(
        "--whitening",
        choices=(*METHODS, "none"),
        default="learned",
        help="learned (from each sampled image and an edited copy: crop, mirror, rotation, "
        "colour, blur, JPEG, noise), pca, or none (plain h)",
    )
    p.add_argument(
        "--decoder", default="", help="decoder checkpoint (simclr train-decoder) to include"
    )
    p.add_argument(
        "--denoiser", default="", help="denoiser checkpoint (simclr train-denoiser) to include"
    )
    p.add_argument(
        "--denoiser-from",
        default="",
        help="carry the denoiser.onnx of this bundle over unchanged (instead of --denoiser)",
    )
    p.add_argument("--progress", type=lambda v: v.lower() in {"1", "true", "yes"}, default=True)
    p.add_argument(
        "--denoise-border",
        type=int,
        default=BORDER,
        help="px mirrored around images before denoising (bundle/tiling.py: +0.02-0.05 dB on "
        "large photos, a loss on small ones)",
    )
    p.add_argument("--name", default="simclr")
    p.add_argument("--version", default="1")
    return p


def cli_main(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    report = export_bundle(
        args.checkpoint,
        args.out,
        args.images,
        args.normalize,
        args.int8,
        args.calibration_count,
        args.name,
        args.version,
        args.decoder,
        args.denoiser,
        args.whiten_images,
        args.progress,
        args.whitening,
        args.denoise_border,
        args.denoiser_from,
    )
    print(json.dumps(report))
    return 0
