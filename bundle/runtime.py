"""ONNX Runtime sessions for a bundle's models: provider choice, threads, and shape checks.

The CUDA execution provider is used when this onnxruntime build has it and a GPU answers; otherwise
the CPU provider, with one log line saying so. Thread counts are explicit so the server's decode
pool, gRPC and faiss do not fight ONNX Runtime for the cores. Graph optimisations are on
(``ORT_ENABLE_ALL``; ``benchmarks/bench_export.py`` measures them against ``ORT_ENABLE_BASIC``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from simclr_search.bundle.manifest import BundleError, Manifest
from simclr_search.bundle.tiling import BORDER

log = logging.getLogger(__name__)
_warned_cpu = False


def providers(device: str = "auto") -> list[str]:
    """``auto``: CUDA if available, else CPU (logged once); ``cpu`` or ``cuda`` force a choice."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available and _cuda_device_present():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise BundleError(
            "device 'cuda' requested but the CUDA execution provider or a GPU is not available"
        )
    global _warned_cpu
    if not _warned_cpu:
        log.info("onnxruntime: no usable CUDA execution provider; running on the CPU provider")
        _warned_cpu = True
    return ["CPUExecutionProvider"]


def _cuda_device_present() -> bool:
    import ctypes

    for name in ("libcuda.so.1", "libcuda.so"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if lib.cuInit(0) == 0 and lib.cuDeviceGetCount(ctypes.byref(count)) == 0:
            return count.value > 0
    return False


def session(
    path: str, device: str = "auto", intra_threads: int = 0, optimization: str = "all"
) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_threads
    options.inter_op_num_threads = 1
    # ONNX Runtime's intra-op threads spin-wait between runs by default, burning the cores that a
    # server's event loop and decode threads need between micro-batches.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    levels = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }
    options.graph_optimization_level = levels[optimization]
    try:
        return ort.InferenceSession(path, sess_options=options, providers=providers(device))
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise BundleError(f"onnxruntime cannot load {path}: {exc}") from exc


class Encoder:
    """The bundle's encoder: ``(B, 3, S, S)`` float32 -> ``(B, D)`` float32 embeddings."""

    def __init__(
        self,
        manifest: Manifest,
        int8: bool = False,
        device: str = "auto",
        intra_threads: int = 0,
        optimization: str = "all",
    ) -> None:
        role = "encoder_int8" if int8 else "encoder"
        self.manifest = manifest
        self.session = session(str(manifest.path(role)), device, intra_threads, optimization)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise BundleError(
                f"{role}: expected one input and one output, got {len(inputs)} and {len(outputs)}"
            )
        shape_in, shape_out = inputs[0].shape, outputs[0].shape
        size = manifest.input_size
        if len(shape_in) != 4 or shape_in[1] != 3 or shape_in[2] != size or shape_in[3] != size:
            raise BundleError(
                f"{role}: input shape {shape_in} does not match the manifest's (batch, 3, {size}, {size})"
            )
        if len(shape_out) != 2 or shape_out[1] != manifest.embedding_dim:
            raise BundleError(
                f"{role}: output shape {shape_out} does not match the manifest's embedding dim {manifest.embedding_dim}"
            )
        self.input_name = inputs[0].name
        self.providers = self.session.get_providers()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(
            None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}
        )[0]


class Decoder:
    """The bundle's decoder: ``(B, D)`` served embeddings -> ``(B, 3, S, S)`` RGB in [0, 1].

    Embeddings are scaled to unit length first; a whitened bundle's decoder file un-whitens them.
    """

    def __init__(self, manifest: Manifest, device: str = "auto", intra_threads: int = 0) -> None:
        self.session = session(str(manifest.path("decoder")), device, intra_threads)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs[0].shape) != 2 or inputs[0].shape[1] != manifest.embedding_dim:
            raise BundleError(
                f"decoder: input shape {inputs[0].shape} does not match embedding dim {manifest.embedding_dim}"
            )
        if len(outputs[0].shape) != 4 or outputs[0].shape[1] != 3:
            raise BundleError(f"decoder: output shape {outputs[0].shape} is not (batch, 3, H, W)")
        self.input_name = inputs[0].name
        self.dim = manifest.embedding_dim

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        h = np.ascontiguousarray(embeddings, dtype=np.float32)
        h = h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
        return self.session.run(None, {self.input_name: h})[0]


# Self-ensembles (geometric: rotations by 90 degrees, then flips; Timofte et al. 2016, "Seven ways
# to improve example-based single image super resolution"): (quarter turns, mirror) pairs. Each
# doubling of the work buys less (benchmarks/bench_denoise.py).
ENSEMBLES = {
    1: ((0, False),),
    2: ((0, False), (0, True)),
    4: ((0, False), (1, False), (2, False), (3, False)),
    8: tuple((turns, flip) for flip in (False, True) for turns in range(4)),
}
#: ``ensemble="auto"``: the 4-pass ensemble for images up to this many pixels, where four passes
#: still take about a second on two cores; one pass above it, so a large photo does not take four
#: times as long.
AUTO_ENSEMBLE_PIXELS = 512 * 1024


class Denoiser:
    """The bundle's denoiser: an RGB image of any size -> the denoised image, in tiles.

    ``__call__`` takes ``(H, W, 3)`` uint8 (or float on 0-255) and the noise sigma on the 0-255 scale
    (``None`` = unknown, blind) and returns ``(H, W, 3)`` uint8. Tiles of at most the manifest's
    ``max_tile`` pixels per side (plus its mirrored ``border``) bound the memory a huge image needs
    (``bundle.tiling``).
    ``ensemble`` > 1 averages that many rotated / flipped passes (self-ensemble): a little more
    PSNR for proportionally more time; ``"auto"`` takes 4 passes for images of at most
    ``AUTO_ENSEMBLE_PIXELS`` and 1 above.
    """

    def __init__(
        self,
        manifest: Manifest,
        device: str = "auto",
        intra_threads: int = 0,
        ensemble: int | str = 1,
    ) -> None:
        tiling = manifest.data["files"]["denoiser"].get("tiling", {})
        self._load(str(manifest.path("denoiser")), tiling, device, intra_threads, ensemble)

    @classmethod
    def from_file(
        cls,
        path: str,
        max_tile: int = 512,
        overlap: int = 32,
        device: str = "auto",
        ensemble: int | str = 1,
        border: int = BORDER,
    ) -> Denoiser:
        """A denoiser from a bare ONNX file (benchmarks, tests); servers load bundles."""
        self = cls.__new__(cls)
        tiling = {"max_tile": max_tile, "overlap": overlap, "border": border}
        self._load(path, tiling, device, 0, ensemble)
        return self

    def _load(
        self, path: str, tiling: dict, device: str, intra_threads: int, ensemble: int | str
    ) -> None:
        if ensemble != "auto" and ensemble not in ENSEMBLES:
            raise BundleError(
                f"denoiser ensemble must be 'auto' or one of {sorted(ENSEMBLES)}, got {ensemble!r}"
            )
        self.auto = ensemble == "auto"
        self.transforms = ENSEMBLES[4 if self.auto else ensemble]
        self.session = session(path, device, intra_threads)
        names = [i.name for i in self.session.get_inputs()]
        shape = self.session.get_inputs()[0].shape
        if names != ["images", "noise_sigma"] or len(shape) != 4 or shape[1] != 3:
            raise BundleError(
                f"denoiser: expected inputs images (batch, 3, H, W) and noise_sigma (batch,), "
                f"got {names} with images {shape}"
            )
        self.max_tile = int(tiling.get("max_tile", 512))
        self.overlap = int(tiling.get("overlap", 32))
        self.border = int(tiling.get("border", 0))  # bundles from before borders: none

    def __call__(
        self,
        image: np.ndarray,
        sigma: float | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """``(H, W, 3)`` uint8 -> ``(H, W, 3)`` uint8; ``cancelled`` stops a tiled run early."""
        return (self.denoise_float(image, sigma, cancelled) + 0.5).astype(np.uint8)

    def denoise_float(
        self,
        image: np.ndarray,
        sigma: float | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """``(H, W, 3)`` on the 0-255 scale (noisy values outside it are fine) -> float32 in [0, 255]."""
        from simclr_search.bundle.tiling import apply_tiled

        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"expected an RGB image of shape (H, W, 3), got {image.shape}")
        if sigma is not None and not 0 <= sigma <= 255:
            raise ValueError(f"noise sigma must be between 0 and 255 (or unknown), got {sigma}")
        level = np.float32(-1.0 if sigma is None else sigma)
        chw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / 255.0
        transforms = self.transforms
        if self.auto and image.shape[0] * image.shape[1] > AUTO_ENSEMBLE_PIXELS:
            transforms = ENSEMBLES[1]

        def once(tiles: np.ndarray) -> np.ndarray:
            sigmas = np.full((len(tiles),), level, dtype=np.float32)
            return self.session.run(
                None, {"images": np.ascontiguousarray(tiles), "noise_sigma": sigmas}
            )[0]

        def run(tiles: np.ndarray) -> np.ndarray:
            # Self-ensemble: denoise rotated / flipped copies, undo the transform, average.
            total = np.zeros_like(tiles)
            for turns, flip in transforms:
                x = np.rot90(tiles[..., ::-1] if flip else tiles, turns, axes=(2, 3))
                y = np.rot90(once(x), -turns, axes=(2, 3))
                total += y[..., ::-1] if flip else y
            return total / len(transforms)

        out = apply_tiled(
            run, chw, self.max_tile, self.overlap, cancelled=cancelled, border=self.border
        )
        return np.clip(out, 0, 1).transpose(1, 2, 0) * 255.0
