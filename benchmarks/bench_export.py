"""Inference speed of the exported encoder: PyTorch eager vs ONNX Runtime fp32 vs ONNX Runtime INT8.

For ResNet-18 (small stem, 32 px) and the compact encoder it exports the encoder exactly as
``simclr export`` does (BatchNorm folded, opset 17, checked), writes the static QDQ INT8 model
calibrated on CIFAR-10 images, and times batch 1 and batch 32 with each runtime, with achieved
GFLOP/s. With ``--checkpoint`` (a trained model) it also measures what INT8 costs in kNN top-1 on
CIFAR-10 test (bank: CIFAR-10 train), and the effect of ORT's full graph optimisation vs basic.
With ``--bundle`` (a model bundle that holds an INT8 encoder, such as the one the repository ships)
it measures the same on the bundle's own files, on the served embeddings (whitened h), so a fresh
clone can check what the shipped INT8 encoder costs without the training run behind it.

    python benchmarks/bench_export.py --checkpoint runs/quality/checkpoint.pt
    python benchmarks/bench_export.py --bundle models/compact-cifar10
    python benchmarks/bench_export.py --quick
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cifar, emit, machine
from simclr_search.bundle.manifest import load_manifest
from simclr_search.bundle.runtime import session
from simclr_search.training.checkpoint import load_checkpoint
from simclr_search.training.data.library import build_library
from simclr_search.training.evaluate import knn_accuracy
from simclr_search.training.export import EncoderForExport, sample_images
from simclr_search.training.models.simclr import build_model, model_from_checkpoint
from simclr_search.training.onnx_export import export_onnx, fold_batchnorm, quantize_int8

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def rate(fn, batch: np.ndarray, seconds: float) -> float:
    fn(batch)
    fn(batch)
    count, tick = 0, time.perf_counter()
    while time.perf_counter() - tick < seconds:
        fn(batch)
        count += len(batch)
    return count / (time.perf_counter() - tick)


def flops_per_image(module: torch.nn.Module) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(torch.randn(1, 3, 32, 32))
    return float(counter.get_total_flops())


def bench_encoder(
    module: torch.nn.Module, calibration: np.ndarray, out: Path, seconds: float
) -> dict:
    module = module.eval()
    export_onnx(
        fold_batchnorm(module),
        torch.from_numpy(calibration[:2]),
        out / "encoder.onnx",
        "images",
        "embeddings",
    )
    quantize_int8(out / "encoder.onnx", out / "encoder.int8.onnx", calibration)
    runtimes = {
        "pytorch_eager": lambda x: module(torch.from_numpy(x)),
        "onnxruntime_fp32": _ort(out / "encoder.onnx", "all"),
        "onnxruntime_fp32_basic_opt": _ort(out / "encoder.onnx", "basic"),
        "onnxruntime_int8": _ort(out / "encoder.int8.onnx", "all"),
    }
    flops = flops_per_image(module)
    row: dict = {"gflop_per_image": flops / 1e9}
    torch.set_num_threads(2)
    for name, fn in runtimes.items():
        for batch in (1, 32):
            with torch.no_grad():
                ips = rate(fn, calibration[:batch], seconds)
            row[f"{name}_b{batch}_images_per_s"] = ips
            row[f"{name}_b{batch}_gflops"] = ips * flops / 1e9
    return row


def _ort(path: Path, optimization: str):
    sess = session(str(path), device="cpu", intra_threads=2, optimization=optimization)
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def embed_all(
    fn, images: np.ndarray, batch: int = 256, mean: tuple = MEAN, std: tuple = STD
) -> torch.Tensor:
    out = []
    for start in range(0, len(images), batch):
        x = np.asarray(images[start : start + batch]).astype(np.float32) / 255.0
        x = ((x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).transpose(0, 3, 1, 2)
        out.append(torch.from_numpy(np.asarray(fn(np.ascontiguousarray(x)))))
    return torch.cat(out)


def knn_int8_vs_fp32(checkpoint: str, out: Path, calibration: np.ndarray, quick: bool) -> dict:
    state = load_checkpoint(checkpoint)
    model = model_from_checkpoint(state)
    module = EncoderForExport(model.encoder, normalize=True)
    export_onnx(
        fold_batchnorm(module),
        torch.from_numpy(calibration[:2]),
        out / "trained.onnx",
        "images",
        "embeddings",
    )
    quantize_int8(out / "trained.onnx", out / "trained.int8.onnx", calibration)
    return knn_of_files(out / "trained.onnx", out / "trained.int8.onnx", MEAN, STD, quick)


def knn_of_files(fp32: Path, int8: Path, mean: tuple, std: tuple, quick: bool) -> dict:
    """kNN top-1 on CIFAR-10 test (bank: CIFAR-10 train) through two encoder files, fp32 and INT8."""
    cache = Path(tempfile.gettempdir()) / "simclr-bench-cache"
    bank = build_library(cifar("train"), 32, cache, progress=False)
    test = build_library(cifar("test"), 32, cache, progress=False)
    # --quick: every 10th image, so every class is in both (the archives are sorted by class).
    rows = slice(None, None, 10) if quick else slice(None)
    result = {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        fn = _ort(path, "all")
        feats_bank = embed_all(fn, bank.images[rows], mean=mean, std=std)
        feats_test = embed_all(fn, test.images[rows], mean=mean, std=std)
        result[f"knn_top1_{name}"] = knn_accuracy(
            feats_bank, bank.labels[rows], feats_test, test.labels[rows]
        )
    result["knn_drop_points"] = 100 * (result["knn_top1_fp32"] - result["knn_top1_int8"])
    return result


def bench_denoiser(checkpoint: str, out: Path, size: int) -> dict:
    """Seconds per image for the denoiser (trained weights, or the default architecture untrained:
    the timing does not depend on the weights), PyTorch eager fp32 vs ONNX Runtime fp32."""
    from benchmarks.bench_denoise import speed
    from simclr_search.bundle.runtime import Denoiser as OnnxDenoiser
    from simclr_search.training.denoiser_train import load_denoiser
    from simclr_search.training.export_denoiser import DenoiserForExport, write_onnx
    from simclr_search.training.models.denoiser import Denoiser

    model = load_denoiser(checkpoint)[0] if checkpoint else Denoiser().eval()
    pixels = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    write_onnx(model, out / "denoiser.onnx", pixels)
    onnx = OnnxDenoiser.from_file(str(out / "denoiser.onnx"), device="cpu")
    row = speed(DenoiserForExport(model), onnx, size, 3)
    return {**row, "size": size, "weights": checkpoint or "default architecture, untrained"}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--checkpoint", help="a trained checkpoint for the INT8 kNN comparison")
    parser.add_argument(
        "--bundle", help="a model bundle with an INT8 encoder for the INT8 kNN comparison"
    )
    parser.add_argument("--denoiser", default="", help="denoiser checkpoint (default: untrained)")
    parser.add_argument("--encoders", nargs="+", default=["resnet18", "compact"])
    args = parser.parse_args()
    seconds = 1.0 if args.quick else 4.0
    out = Path(tempfile.mkdtemp(prefix="simclr-export-bench-"))
    calibration = sample_images(str(cifar("test")), 64 if args.quick else 256, 32, MEAN, STD)
    print(f"machine: {machine()}")
    result: dict = {"quick": args.quick}
    for encoder in args.encoders:
        torch.manual_seed(0)
        module = EncoderForExport(build_model(encoder).encoder, normalize=True)
        folder = out / encoder
        folder.mkdir()
        row = bench_encoder(module, calibration, folder, seconds)
        result[encoder] = row
        print(f"\n{encoder} ({row['gflop_per_image']:.2f} GFLOP per image)")
        for name in (
            "pytorch_eager",
            "onnxruntime_fp32",
            "onnxruntime_fp32_basic_opt",
            "onnxruntime_int8",
        ):
            print(
                f"  {name:<28} batch 1 {row[f'{name}_b1_images_per_s']:8.1f} img/s ({row[f'{name}_b1_gflops']:5.0f} "
                f"GFLOP/s)  batch 32 {row[f'{name}_b32_images_per_s']:8.1f} img/s ({row[f'{name}_b32_gflops']:5.0f} GFLOP/s)"
            )
        row["ort_fp32_vs_eager_b1"] = (
            row["onnxruntime_fp32_b1_images_per_s"] / row["pytorch_eager_b1_images_per_s"]
        )
        row["int8_vs_ort_fp32_b32"] = (
            row["onnxruntime_int8_b32_images_per_s"] / row["onnxruntime_fp32_b32_images_per_s"]
        )
        print(
            f"  ONNX Runtime fp32 / eager at batch 1: {row['ort_fp32_vs_eager_b1']:.2f}x; "
            f"INT8 / fp32 at batch 32: {row['int8_vs_ort_fp32_b32']:.2f}x"
        )
    if args.checkpoint:
        result["knn"] = knn_int8_vs_fp32(args.checkpoint, out, calibration, args.quick)
    elif args.bundle:
        manifest = load_manifest(args.bundle)
        if not manifest.has("encoder_int8"):
            raise SystemExit(f"{args.bundle} holds no INT8 encoder (simclr export --int8)")
        result["knn"] = knn_of_files(
            manifest.path("encoder"),
            manifest.path("encoder_int8"),
            manifest.mean,
            manifest.std,
            args.quick,
        )
        result["knn"]["bundle"] = args.bundle
    if "knn" in result:
        knn = result["knn"]
        print(
            f"\nkNN top-1 on CIFAR-10 test: fp32 {100 * knn['knn_top1_fp32']:.2f}%, INT8 "
            f"{100 * knn['knn_top1_int8']:.2f}% (drop {knn['knn_drop_points']:.2f} points)"
        )
    result["denoiser"] = bench_denoiser(args.denoiser, out, 256 if args.quick else 500)
    d = result["denoiser"]
    print(
        f"\ndenoiser ({d['gflop_per_image']:.0f} GFLOP per {d['size']}x{d['size']} image, {d['weights']}): "
        f"PyTorch eager {d['pytorch_seconds']:.3f} s ({d['pytorch_gflops']:.0f} GFLOP/s), "
        f"ONNX Runtime {d['onnxruntime_seconds']:.3f} s ({d['onnxruntime_gflops']:.0f} GFLOP/s)"
    )
    emit(result)


if __name__ == "__main__":
    main()
