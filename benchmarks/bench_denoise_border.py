"""Does mirroring a border around an image help the denoiser? PSNR by image size, with and without.

The served denoiser can mirror ``--borders`` pixels around each image before the network and crop
them off (``bundle/tiling.py``). Its effect depends on the image's size, so this measures it on
CIFAR-10 test images (32 px, every 50th), on top-left crops of Kodak24 of several sizes and on
whole Kodak24 images (500 x 500 in ``../shared``), at sigma 25 (blind), with the bundle's denoiser
through ONNX Runtime.

    python benchmarks/bench_denoise_border.py
    python benchmarks/bench_denoise_border.py --quick
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED, cifar, emit
from simclr_search.bundle.runtime import Denoiser
from simclr_search.bundle.sources import iter_image_bytes
from simclr_search.training.denoise_eval import EvalImage, evaluate_method, load_eval_set

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--denoiser", default=str(ROOT / "models" / "compact-cifar10" / "denoiser.onnx")
    )
    parser.add_argument("--borders", default="0,16")
    parser.add_argument("--sigma", type=float, default=25.0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    every = 500 if args.quick else 50
    small = [
        EvalImage(str(i), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
        for i, (_, data) in enumerate(iter_image_bytes(cifar("test")))
        if i % every == 0
    ]
    kodak = load_eval_set(str(SHARED / "denoise-eval" / "Kodak24.tar"), 4 if args.quick else 0)
    sets = {"cifar10 32 px": small}
    for size in (64, 128, 256) if args.quick else (64, 128, 256, 384):
        sets[f"kodak24 {size} px crops"] = [
            EvalImage(k.name, k.pixels[:size, :size].copy()) for k in kodak
        ]
    sets["kodak24 whole"] = kodak
    result: dict = {"sigma": args.sigma, "psnr": {}}
    borders = [int(b) for b in args.borders.split(",")]
    print(f"{'set':<22}" + "".join(f"{f'border {b}':>11}" for b in borders))
    for name, images in sets.items():
        row = {}
        for border in borders:
            denoiser = Denoiser.from_file(args.denoiser, border=border)
            row[border] = evaluate_method(denoiser.denoise_float, images, args.sigma, known=False)[
                "psnr"
            ]
        result["psnr"][name] = row
        print(f"{name:<22}" + "".join(f"{row[b]:>11.3f}" for b in borders), flush=True)
    emit(result)


if __name__ == "__main__":
    main()
