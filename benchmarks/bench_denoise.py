"""Denoising quality and speed: our denoiser vs CBM3D and non-local means, side by side, one run.

Quality: mean PSNR / SSIM on CBSD68 and Kodak24 (``../shared/datasets/denoise-eval``) at sigma 15,
25 and 50 with the FFDNet protocol (``training.denoise_eval``): the noisy input, ours through ONNX
Runtime (what the service runs; blind, told the level, and blind with a 4-pass self-ensemble),
non-local means (scikit-image, told the level) and CBM3D (the ``bm3d`` package, told the level).
CBM3D takes 11-17 s per image here, so it runs on the first ``--cbm3d-limit`` images of each set and
sigma, and ours is also reported on exactly that subset.
The published FFDNet-paper table is printed beside.

Clean input: the same sets with no noise added, blind: how much ours changes a clean photo.

Speed: seconds per 500x500 image for ours in ONNX Runtime (fp32), against CBM3D's seconds on the
same-size Kodak24 images in this run; with ``--checkpoint`` also in PyTorch (eager fp32), with the
GFLOP per image and the achieved GFLOP/s.

What is measured: by default the denoiser of the bundle the repository ships (``--bundle``), the file
the service runs, so a fresh clone reproduces the README's figures without its hours of training;
``--checkpoint`` measures a ``simclr train-denoiser`` checkpoint instead, exported here.

    python benchmarks/bench_denoise.py
    python benchmarks/bench_denoise.py --checkpoint runs/denoiser/denoiser.pt --quick
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED, best_seconds, emit, machine, peak_gflops
from simclr_search.bundle.manifest import load_manifest
from simclr_search.bundle.runtime import AUTO_ENSEMBLE_PIXELS
from simclr_search.bundle.runtime import Denoiser as OnnxDenoiser
from simclr_search.training.denoise_eval import EvalImage, evaluate_method, load_eval_set, psnr_255
from simclr_search.training.denoiser_train import load_denoiser
from simclr_search.training.export_denoiser import DenoiserForExport, export_denoiser

PUBLISHED = {  # FFDNet paper (Zhang et al. 2018), colour AWGN, mean PSNR dB
    "CBSD68": {
        "CBM3D": (33.52, 30.71, 27.38),
        "CDnCNN": (33.89, 31.23, 27.92),
        "FFDNet": (33.87, 31.21, 27.96),
    },
    "Kodak24": {
        "CBM3D": (34.28, 31.68, 28.46),
        "CDnCNN": (34.48, 32.03, 28.85),
        "FFDNet": (34.63, 32.13, 28.98),
    },
}
PUBLISHED_SIGMAS = (15, 25, 50)
ROOT = Path(__file__).resolve().parents[1]


def nlm(noisy: np.ndarray, sigma: float | None) -> np.ndarray:
    from skimage.restoration import denoise_nl_means

    s = (sigma or 25.0) / 255.0
    out = denoise_nl_means(
        noisy / 255.0,
        h=0.8 * s,
        sigma=s,
        patch_size=5,
        patch_distance=6,
        fast_mode=True,
        channel_axis=-1,
    )
    return out * 255.0


def cbm3d(noisy: np.ndarray, sigma: float | None) -> np.ndarray:
    import bm3d

    return bm3d.bm3d_rgb(noisy / 255.0, (sigma or 25.0) / 255.0) * 255.0


def identity(noisy: np.ndarray, sigma: float | None) -> np.ndarray:
    return noisy


def speed(
    model: torch.nn.Module | None,
    onnx: OnnxDenoiser,
    size: int,
    repeats: int,
    onnx4: OnnxDenoiser | None = None,
) -> dict[str, float]:
    """Seconds per ``size x size`` image, ONNX Runtime fp32 (and PyTorch eager fp32 with GFLOP/s
    when the PyTorch ``model`` is at hand: the FLOP count comes from it)."""
    from torch.utils.flop_counter import FlopCounterMode

    # Both runtimes do the served work: the image plus its mirrored border (bundle.tiling).
    b = onnx.border
    x = torch.rand(1, 3, size + 2 * b, size + 2 * b)
    sigma = torch.tensor([-1.0])
    image = (x[0, :, b : b + size, b : b + size].permute(1, 2, 0).numpy() * 255).astype(np.float32)
    results: dict[str, float] = {}
    flops = 0.0
    if model is not None:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x, sigma)
        flops = float(counter.get_total_flops())
        results["gflop_per_image"] = flops / 1e9
    for name, fn in (
        *([("pytorch", lambda: model(x, sigma))] if model is not None else []),
        ("onnxruntime", lambda: onnx.denoise_float(image, None)),
        *([("onnxruntime_x4", lambda: onnx4.denoise_float(image, None))] if onnx4 else []),
    ):
        with torch.no_grad():
            best = best_seconds(fn, repeats)
        results[f"{name}_seconds"] = best
        if flops:
            passes = 4 if name.endswith("_x4") else 1
            results[f"{name}_gflops"] = passes * flops / best / 1e9
    return results


def clean_input(method, images: list[EvalImage]) -> dict[str, float]:
    """What the denoiser does to photos with no noise: a user's clean photo should come back as it was.

    PSNR of the blind output against its (clean) input, and the largest mean shift of one colour
    channel over the set, in levels of 255 (a colour cast shows here before it shows in PSNR).
    """
    psnrs, shifts = [], []
    for image in images:
        out = method(image.pixels.astype(np.float32), None)
        psnrs.append(psnr_255(out, image.pixels))
        shifts.append(np.abs((np.clip(out, 0, 255) - image.pixels).mean(axis=(0, 1))).max())
    return {
        "psnr": round(float(np.mean(psnrs)), 3),
        "max_colour_shift": round(float(max(shifts)), 2),
    }


def crop(images: list[EvalImage], size: int) -> list[EvalImage]:
    out = []
    for image in images:
        h, w = image.pixels.shape[:2]
        top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
        out.append(EvalImage(image.name, image.pixels[top : top + size, left : left + size].copy()))
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--bundle",
        default=str(ROOT / "models" / "compact-cifar10"),
        help="model bundle whose denoiser to measure (default: the one the repository ships)",
    )
    p.add_argument(
        "--checkpoint",
        default="",
        help="measure this denoiser checkpoint (simclr train-denoiser) instead of the bundle's;"
        " also times it in PyTorch",
    )
    p.add_argument("--sigmas", default="15,25,50")
    p.add_argument(
        "--border",
        type=int,
        default=None,
        help="px mirrored around each image (bundle/tiling.py; default: the bundle's, 0 for a"
        " checkpoint)",
    )
    p.add_argument(
        "--cbm3d-limit", type=int, default=4, help="images per set and sigma for CBM3D (0: none)"
    )
    p.add_argument(
        "--limit", type=int, default=0, help="images per set for the other methods (0: all)"
    )
    p.add_argument(
        "--quick", action="store_true", help="2 centre crops of 128 px per set, sigma 25"
    )
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    sigmas = [25.0] if args.quick else [float(s) for s in args.sigmas.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        exported: torch.nn.Module | None = None
        if args.checkpoint:
            model, state = load_denoiser(args.checkpoint)
            rng = np.random.default_rng(0)
            export_denoiser(
                args.checkpoint, Path(tmp), rng.random((2, 3, 32, 32), dtype=np.float32)
            )
            path, border = str(Path(tmp) / "denoiser.onnx"), args.border or 0
            exported = DenoiserForExport(model)
            measured, training = args.checkpoint, state
        else:
            manifest = load_manifest(args.bundle)
            entry = manifest.data["files"]["denoiser"]
            path = str(manifest.path("denoiser"))
            border = (
                entry.get("tiling", {}).get("border", 0) if args.border is None else args.border
            )
            measured = f"{args.bundle} (bundle version {manifest.data['model']['version']})"
            training = entry.get("training", {})
        onnx = OnnxDenoiser.from_file(path, border=border)
        onnx4 = OnnxDenoiser.from_file(path, ensemble=4, border=border)
        results: dict = {
            "machine": machine(),
            "measured": measured,
            "border": border,
            "training": training.get("config", {}),
            "training_steps": training.get("step"),
        }
        print(f"machine: {results['machine']}")
        print(f"denoiser: {measured}")
        rows = []
        for set_name in ("Kodak24", "CBSD68"):
            source = SHARED / "denoise-eval" / f"{set_name}.tar"
            if not source.exists():
                raise SystemExit(
                    f"benchmark needs {source} (../shared/datasets); it is not present"
                )
            images = load_eval_set(str(source), 2 if args.quick else args.limit)
            if args.quick:
                images = crop(images, 128)
            cbm3d_count = min(1 if args.quick else args.cbm3d_limit, len(images))
            small = sum(
                i.pixels.shape[0] * i.pixels.shape[1] <= AUTO_ENSEMBLE_PIXELS for i in images
            )
            results.setdefault("served_default_x4_images", {})[set_name] = [small, len(images)]
            print(
                f"{set_name:8} the server's default (--denoise-ensemble auto) takes the x4 ensemble"
                f" for {small} of {len(images)} images (at most {AUTO_ENSEMBLE_PIXELS:,} pixels)"
            )
            results.setdefault("clean_input", {})[set_name] = clean = clean_input(
                onnx.denoise_float, images
            )
            print(
                f"{set_name:8} clean input (no noise added) | ours blind: {clean['psnr']:.2f} dB against"
                f" the input, largest colour shift {clean['max_colour_shift']:.2f} levels",
                flush=True,
            )
            for sigma in sigmas:
                row = {"set": set_name, "sigma": sigma}
                methods = {
                    "noisy": (identity, True),
                    "ours_blind": (onnx.denoise_float, False),
                    "ours_known": (onnx.denoise_float, True),
                    "ours_blind_x4": (onnx4.denoise_float, False),
                    "nlm": (nlm, True),
                }
                for name, (method, known) in methods.items():
                    scores = evaluate_method(method, images, sigma, known=known)
                    row[name] = round(scores["psnr"], 3)
                    row[f"{name}_ssim"] = round(scores["ssim"], 4)
                    row[f"{name}_s"] = round(scores["seconds_per_image"], 3)
                    if name.startswith("ours") and cbm3d_count:
                        row[f"{name}_subset"] = round(
                            float(np.mean(scores["per_image"][:cbm3d_count])), 3
                        )
                if cbm3d_count:
                    scores = evaluate_method(cbm3d, images[:cbm3d_count], sigma, known=True)
                    row["cbm3d_subset"] = round(scores["psnr"], 3)
                    row["cbm3d_ssim_subset"] = round(scores["ssim"], 4)
                    row["cbm3d_s"] = round(scores["seconds_per_image"], 2)
                    row["cbm3d_images"] = cbm3d_count
                if int(sigma) in PUBLISHED_SIGMAS:
                    i = PUBLISHED_SIGMAS.index(int(sigma))
                    row.update({f"published_{k}": v[i] for k, v in PUBLISHED[set_name].items()})
                rows.append(row)
                against_cbm3d = (
                    f" | on first {cbm3d_count}: ours {row['ours_known_subset']:6.2f}"
                    f" x4 {row['ours_blind_x4_subset']:6.2f}"
                    f" CBM3D {row['cbm3d_subset']:6.2f} ({row['cbm3d_s']:.1f} s)"
                    if cbm3d_count
                    else ""
                )
                print(
                    f"{set_name:8} sigma {sigma:4.0f} | noisy {row['noisy']:6.2f} | ours blind {row['ours_blind']:6.2f}"
                    f" known {row['ours_known']:6.2f} ({row['ours_known_s']:.2f} s)"
                    f" blind x4 {row['ours_blind_x4']:6.2f} ({row['ours_blind_x4_s']:.2f} s) | NLM {row['nlm']:6.2f}"
                    f" ({row['nlm_s']:.2f} s){against_cbm3d}"
                    f" | published CBM3D {row.get('published_CBM3D', '-')} FFDNet {row.get('published_FFDNet', '-')}",
                    flush=True,
                )
        results["quality"] = rows
        size = 128 if args.quick else 500
        results["speed"] = speed(exported, onnx, size, 1 if args.quick else 3, onnx4)
        results["speed"]["size"] = size
        kodak_cbm3d = [r["cbm3d_s"] for r in rows if r["set"] == "Kodak24" and "cbm3d_s" in r]
        if kodak_cbm3d:
            results["speed"]["cbm3d_seconds"] = float(np.mean(kodak_cbm3d))
            results["speed"]["onnx_speedup_vs_cbm3d"] = (
                results["speed"]["cbm3d_seconds"] / results["speed"]["onnxruntime_seconds"]
            )
            results["speed"]["onnx_x4_speedup_vs_cbm3d"] = (
                results["speed"]["cbm3d_seconds"] / results["speed"]["onnxruntime_x4_seconds"]
            )
        results["peak_fp32_gflops"] = peak_gflops("fp32")
        s = results["speed"]
        versus = (
            f"CBM3D {s['cbm3d_seconds']:.2f} s -> {s['onnx_speedup_vs_cbm3d']:.1f}x"
            f" (x4: {s['onnx_x4_speedup_vs_cbm3d']:.1f}x); "
            if kodak_cbm3d
            else "CBM3D not run (--cbm3d-limit 0); "
        )
        pytorch = (
            f"PyTorch {s['pytorch_seconds']:.3f} s ({s['pytorch_gflops']:.0f} GFLOP/s), "
            f"ONNX Runtime {s['onnxruntime_seconds']:.3f} s ({s['onnxruntime_gflops']:.0f} GFLOP/s), "
            f"{s['gflop_per_image']:.1f} GFLOP/image"
            if "pytorch_seconds" in s
            else f"ONNX Runtime {s['onnxruntime_seconds']:.3f} s"
        )
        print(
            f"speed at {size}x{size}: {pytorch}; x4 ensemble {s['onnxruntime_x4_seconds']:.3f} s; "
            f"{versus}fp32 peak {results['peak_fp32_gflops']:.0f} GFLOP/s"
        )
    emit(results)


if __name__ == "__main__":
    main()
