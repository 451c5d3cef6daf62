"""``denoiser.onnx`` for a model bundle: noisy images -> clean images, dynamic batch, height and width.

Inputs ``images`` ``(batch, 3, height, width)`` RGB on the [0, 1] scale (unclipped noisy pixels are
fine) and ``noise_sigma`` ``(batch,)`` on the 0-255 scale, negative for "unknown" (blind); output
``images`` of the same shape, clipped to [0, 1]. Any height and width: the graph pads to its multiple
and crops back. BatchNorm is folded per block (the model's input checks keep torch.fx off the whole
module). Weights are stored as float16 and computed in float32 (``training.onnx_storage``: half the file,
same speed). ONNX Runtime must match PyTorch at several sizes (odd, tiny, larger than the training
patches) or the export is refused. Large images are tiled by the caller (``bundle.tiling``); the
manifest records the tile size and overlap the model was checked with.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from simclr_search.bundle.manifest import Manifest, ModelFile
from simclr_search.bundle.tiling import BORDER
from simclr_search.training.onnx_export import OPSET, agreement, fold_batchnorm, require_agreement
from simclr_search.training.onnx_storage import round_weights_to_fp16, store_weights_as_fp16

PARITY_SIZES = ((1, 1), (7, 5), (32, 32), (33, 47), (96, 128), (161, 100))
MAX_TILE = 512
TILE_OVERLAP = 32


class DenoiserForExport(nn.Module):
    """The trained denoiser with folded BatchNorm and clipped output."""

    def __init__(self, denoiser: nn.Module) -> None:
        super().__init__()
        denoiser = denoiser.eval()
        denoiser.stem = fold_batchnorm(denoiser.stem)
        denoiser.stages = nn.ModuleList(fold_batchnorm(s) for s in denoiser.stages)
        denoiser.ups = nn.ModuleList(fold_batchnorm(u) for u in denoiser.ups)
        self.denoiser = denoiser

    def forward(self, images: torch.Tensor, noise_sigma: torch.Tensor) -> torch.Tensor:
        return self.denoiser(images, noise_sigma).clamp(0.0, 1.0)


def _parity(module: nn.Module, session: Any, inputs: np.ndarray, sigma: np.ndarray) -> dict:
    with torch.no_grad():
        expected = module(torch.from_numpy(inputs), torch.from_numpy(sigma)).numpy()
    got = session.run(None, {"images": inputs, "noise_sigma": sigma})[0]
    return agreement(expected, got)


def check_parity(module: nn.Module, path: Path, images: np.ndarray, seed: int = 0) -> dict:
    """Worst max |diff| and cosine over :data:`PARITY_SIZES`, crops of real ``images`` plus noise.

    ``images`` ``(n, 3, H, W)`` in [0, 1]; smaller crops come from them, larger sizes are tiled from them.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    worst = {"max_abs_diff": 0.0, "min_cosine": 1.0, "sizes": []}
    for height, width in PARITY_SIZES:
        reps = (1, 1, -(-height // images.shape[2]), -(-width // images.shape[3]))
        batch = np.tile(images[:2], reps)[:, :, :height, :width]
        batch = batch + rng.normal(0, 25 / 255, batch.shape)
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        sigma = np.array([25.0, -1.0], dtype=np.float32)[: len(batch)]
        result = _parity(module, session, batch, sigma)
        worst["max_abs_diff"] = max(worst["max_abs_diff"], result["max_abs_diff"])
        worst["min_cosine"] = min(worst["min_cosine"], result["min_cosine"])
        worst["sizes"].append(f"{height}x{width}")
    return worst


def export_denoiser(
    denoiser_path: str, out: Path, images: np.ndarray, border: int = BORDER
) -> tuple[ModelFile, dict]:
    """Write ``out/denoiser.onnx`` from a ``simclr train-denoiser`` checkpoint; returns (manifest
    entry, parity). ``border``: the mirrored margin the runtime adds (``bundle.tiling``)."""
    if border < 0:
        raise ValueError(f"denoise border must be >= 0, got {border}")
    from simclr_search.training.denoiser_train import load_denoiser

    model, state = load_denoiser(denoiser_path)
    parity = write_onnx(model, out / "denoiser.onnx", images)
    entry = ModelFile(
        "denoiser.onnx",
        {"images": ["batch", 3, "height", "width"], "noise_sigma": ["batch"]},
        {"denoised": ["batch", 3, "height", "width"]},
        {
            "input_range": [0, 1],
            "output_range": [0, 1],
            "noise_sigma": "0-255 scale; negative = unknown (blind)",
            "tiling": {"max_tile": MAX_TILE, "overlap": TILE_OVERLAP, "border": border},
            "training": {"step": state["step"], "config": state["config"]},
        },
    )
    return entry, parity


def carry_denoiser(source: Manifest, out: Path) -> ModelFile:
    """Copy an exported ``denoiser.onnx`` from another bundle into ``out``; returns its manifest entry.

    Why: the denoiser does not depend on the encoder (it maps pixels to pixels), and training it
    takes hours, so a bundle with a new encoder keeps the last one as it was, byte for byte.
    ``source`` is the other bundle's :class:`bundle.manifest.Manifest`, loaded with its checksums
    verified before anything was written (``out`` may be the same folder).
    """
    if not source.has("denoiser"):
        raise ValueError(f"the bundle at {source.folder} has no denoiser to carry over")
    entry = ModelFile.from_dict(copy.deepcopy(source.data["files"]["denoiser"]))
    target = out / "denoiser.onnx"
    if source.path("denoiser").resolve() != target.resolve():
        shutil.copyfile(source.path("denoiser"), target)
    model = source.data["model"]
    # Carried again later, it still names the bundle whose export wrote the file.
    details = {"carried_from": f"{model['name']} version {model['version']}", **entry.details}
    return ModelFile("denoiser.onnx", entry.inputs, entry.outputs, details)


def write_onnx(model: nn.Module, path: Path, images: np.ndarray, fp16_storage: bool = True) -> dict:
    """Export a ``Denoiser`` to ``path``, check it, and return its parity report (or raise).

    ``fp16_storage`` halves the file (``training.onnx_storage``); parity is checked against the
    same rounded weights, so it still holds to 1e-4.
    """
    module = DenoiserForExport(model).eval()
    if fp16_storage:
        round_weights_to_fp16(module)
    example = (torch.from_numpy(images[:1, :, :32, :32].copy()), torch.tensor([-1.0]))
    axes = {0: "batch", 2: "height", 3: "width"}
    torch.onnx.export(
        module,
        example,
        str(path),
        opset_version=OPSET,
        input_names=["images", "noise_sigma"],
        output_names=["denoised"],
        dynamic_axes={"images": axes, "noise_sigma": {0: "batch"}, "denoised": axes},
        do_constant_folding=True,
        dynamo=False,
    )
    import onnx

    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    if fp16_storage:
        store_weights_as_fp16(path)
    return require_agreement(check_parity(module, path, images), "denoiser")
