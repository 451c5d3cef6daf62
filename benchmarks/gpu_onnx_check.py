"""Which onnxruntime provider the shipped bundle runs on here, and how fast: the serving path on a GPU host.

``device="auto"`` must pick the CUDA execution provider when this onnxruntime build has it and a GPU
answers, and fall back to the CPU provider (one log line) otherwise. This prints the providers each
session got, the embedding throughput of the fp32 and INT8 encoders at batch 256, a 500x500 denoise,
and, where CUDA is in use, how far its embeddings are from the CPU provider's.

    python benchmarks/gpu_onnx_check.py [--bundle models/compact-cifar10]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import emit
from simclr_search.bundle.manifest import load_manifest
from simclr_search.bundle.runtime import Denoiser, Encoder


def images_per_s(encoder: Encoder, batch: np.ndarray, repeats: int = 5) -> float:
    encoder(batch)
    tick = time.perf_counter()
    for _ in range(repeats):
        encoder(batch)
    return repeats * len(batch) / (time.perf_counter() - tick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundle", default="models/compact-cifar10")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import onnxruntime

    manifest = load_manifest(args.bundle)
    size = manifest.input_size
    batch = np.random.default_rng(0).standard_normal((args.batch_size, 3, size, size))
    batch = batch.astype(np.float32)
    result: dict = {
        "onnxruntime": onnxruntime.__version__,
        "available": onnxruntime.get_available_providers(),
    }
    auto = Encoder(manifest, device="auto")
    cpu = Encoder(manifest, device="cpu")
    result["encoder_providers"] = auto.providers
    result["encoder_images_per_s"] = images_per_s(auto, batch)
    result["encoder_int8_images_per_s"] = images_per_s(Encoder(manifest, int8=True), batch)
    if auto.providers[0] != "CPUExecutionProvider":
        result["cpu_provider_images_per_s"] = images_per_s(cpu, batch)
        a, b = auto(batch), cpu(batch)
        cosine = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        result["auto_vs_cpu_min_cosine"] = float(cosine.min())
    if manifest.has("denoiser"):
        denoiser = Denoiser(manifest, device="auto")
        image = np.random.default_rng(1).integers(0, 256, (500, 500, 3), dtype=np.uint8)
        denoiser(image, 25.0)
        tick = time.perf_counter()
        denoiser(image, 25.0)
        result["denoise_500x500_s"] = time.perf_counter() - tick
        result["denoiser_providers"] = denoiser.session.get_providers()
    for key, value in result.items():
        print(f"{key}: {value}")
    emit(result)


if __name__ == "__main__":
    main()
