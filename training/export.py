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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from simclr_search.bundle.manifest import (
    BundleSpec,
    EmbeddingInfo,
    Manifest,
    ModelFile,
    ModelInfo,
    Preprocessing,
    load_manifest,
    write_manifest,
)
from simclr_search.bundle.preprocess import RESIZE_POLICY, encoder_input
from simclr_search.bundle.sources import iter_image_bytes
from simclr_search.bundle.tiling import BORDER
from simclr_search.settings import add_arguments, from_args, setting
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
) -> tuple[ModelFile, dict[str, float]]:
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
    entry = ModelFile(
        "decoder.onnx",
        {"embeddings": ["batch", state["config"]["embed_dim"]]},
        {"images": ["batch", 3, size, size]},
        {"output_range": [0, 1], "training": {"step": state["step"], "config": state["config"]}},
    )
    return entry, parity


@dataclass
class ExportConfig:
    """A bundle export; ``simclr export``'s flags are made from these fields."""

    checkpoint: str = setting(help="trained encoder checkpoint (simclr train)")
    out: str = setting(help="bundle folder to write")
    images: str = setting(
        help="a sample of your images: parity checks, whitening, INT8 calibration"
    )
    normalize: bool = setting(True, "L2-normalise embeddings (cosine search)")
    int8: bool = setting(False, "also write a static INT8 encoder")
    calibration_count: int = setting(256, "images the INT8 calibration and parity checks use")
    whiten_images: int = setting(
        WHITEN_IMAGES,
        "fit the whitening on this many sampled library images (0: serve plain h; skipped with "
        "a warning below 4 images per dimension)",
    )
    whitening: str = setting(
        "learned",
        "learned (from each sampled image and an edited copy), pca, or none (plain h)",
        choices=(*METHODS, "none"),
    )
    decoder: str = setting("", "decoder checkpoint (simclr train-decoder) to include")
    denoiser: str = setting("", "denoiser checkpoint (simclr train-denoiser) to include")
    denoiser_from: str = setting(
        "", "carry the denoiser.onnx of this bundle over unchanged (instead of --denoiser)"
    )
    denoise_border: int = setting(BORDER, "px mirrored around images before denoising")
    name: str = setting("simclr", "the bundle's model name")
    version: str = setting("1", "the bundle's model version")
    progress: bool = setting(True, "progress bars")

    def check(self) -> None:
        if self.denoiser and self.denoiser_from:
            raise ValueError("give a denoiser checkpoint or a bundle to carry one from, not both")


def _served_encoder(
    cfg: ExportConfig, model: nn.Module, size: int, mean, std
) -> tuple[nn.Module, Whitening | None]:
    """The module the encoder file is exported from: folded h, whitened if ``cfg.whitening``."""
    unit_h = fold_batchnorm(EncoderForExport(model.encoder, True))
    encoder = unit_h if cfg.normalize else fold_batchnorm(EncoderForExport(model.encoder, False))
    if cfg.whiten_images <= 0 or cfg.whitening == "none":
        return encoder, None
    whitening = fit_library_whitening(
        unit_h, cfg.images, cfg.whiten_images, size, mean, std, cfg.progress, cfg.whitening
    )
    if whitening is None:
        return encoder, None
    return WhitenedEncoder(unit_h, Whiten(whitening), cfg.normalize), whitening


def _image_models(
    cfg: ExportConfig,
    out: Path,
    encoder: nn.Module,
    whitening: Whitening | None,
    sample: np.ndarray,
    mean,
    std,
    carried: Manifest | None,
) -> tuple[dict[str, ModelFile], dict[str, Any]]:
    """The decoder and denoiser files (exported or carried over) and their parity reports."""
    files: dict[str, ModelFile] = {}
    report: dict[str, Any] = {}
    if cfg.decoder:
        with torch.no_grad():
            # What the encoder file serves: the decoder file takes exactly that.
            embeddings = encoder(torch.from_numpy(sample[:64]))
            if whitening is None:
                embeddings = F.normalize(embeddings, dim=1)  # the decoder takes unit h
        files["decoder"], report["decoder_parity"] = export_decoder(
            cfg.decoder, out, embeddings.numpy(), whitening
        )
    if cfg.denoiser:
        from simclr_search.training.export_denoiser import export_denoiser

        pixels = (
            sample[:8] * np.array(std, np.float32)[:, None, None]
            + np.array(mean, np.float32)[:, None, None]
        )
        files["denoiser"], report["denoiser_parity"] = export_denoiser(
            cfg.denoiser, out, pixels, cfg.denoise_border
        )
    if carried is not None:
        from simclr_search.training.export_denoiser import carry_denoiser

        files["denoiser"] = carry_denoiser(carried, out)
    return files, report


def export_bundle(cfg: ExportConfig) -> dict[str, Any]:
    """Write the bundle to ``cfg.out``; returns a report (parity per file, seconds, files).

    ``cfg.denoiser`` exports a ``simclr train-denoiser`` checkpoint; ``cfg.denoiser_from`` instead
    carries the ``denoiser.onnx`` of another bundle over unchanged (at most one of the two).
    """
    cfg.check()
    # Read (and verify) the other bundle before writing anything: out may be that folder.
    carried = load_manifest(cfg.denoiser_from) if cfg.denoiser_from else None
    if carried is not None and not carried.has("denoiser"):
        raise ValueError(f"the bundle at {cfg.denoiser_from} has no denoiser to carry over")
    state = load_checkpoint(cfg.checkpoint)
    facts = state["preprocessing"]
    size = int(facts["input_size"])
    mean, std = tuple(facts["mean"]), tuple(facts["std"])
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    model = model_from_checkpoint(state)
    started = time.perf_counter()
    encoder, whitening = _served_encoder(cfg, model, size, mean, std)
    sample = sample_images(cfg.images, max(cfg.calibration_count, 16), size, mean, std)
    export_onnx(encoder, torch.from_numpy(sample[:2]), out / "encoder.onnx", "images", "embeddings")
    parity = compare_with_onnxruntime(encoder, out / "encoder.onnx", sample[:64])
    require_agreement(parity, "encoder")
    shapes = ({"images": ["batch", 3, size, size]}, {"embeddings": ["batch", model.num_features]})
    files = {"encoder": ModelFile("encoder.onnx", *shapes)}
    extra, report = _image_models(cfg, out, encoder, whitening, sample, mean, std, carried)
    files.update(extra)
    report["encoder_parity"] = parity
    if cfg.int8:
        quantize_int8(
            out / "encoder.onnx", out / "encoder.int8.onnx", sample[: cfg.calibration_count]
        )
        files["encoder_int8"] = ModelFile(
            "encoder.int8.onnx", *shapes, {"quantization": "static QDQ int8"}
        )
    source = "h (before projection head)"
    if whitening is not None:
        source += f", whitened ({whitening.method})"
    spec = BundleSpec(
        model=ModelInfo(cfg.name, cfg.version),
        preprocessing=Preprocessing(size, mean, std, RESIZE_POLICY),
        embedding=EmbeddingInfo(
            model.num_features,
            cfg.normalize,
            source,
            whitening.describe() if whitening is not None else None,
        ),
        files=files,
        opset=OPSET,
        training={
            "config": state["config"],
            "step": state["step"],
            "checkpoint": str(cfg.checkpoint),
        },
    )
    write_manifest(out, spec)
    report.update(
        {"bundle": str(out), "seconds": time.perf_counter() - started, "files": sorted(files)}
    )
    return report


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="export a checkpoint to an ONNX model bundle", add_help=add_help
    )
    add_arguments(p, ExportConfig)
    return p


def cli_main(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    print(json.dumps(export_bundle(from_args(ExportConfig, args))))
    return 0
