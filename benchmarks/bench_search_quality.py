"""Reverse image search quality: find the original among the indexed images from an edited copy.

Indexes the CIFAR-10 test images (10,000) with the bundle's encoder, then queries with edited copies
of ``--queries`` of them: crop, flip, rotation, colour change, blur, JPEG re-encoding, noise. Reports
the top-1 hit rate per edit (the original is the nearest neighbour), side by side with a perceptual
hash (``imagehash`` pHash, nearest by Hamming distance) on the same images and edits.

    python benchmarks/bench_search_quality.py --bundle models/compact-cifar10
    python benchmarks/bench_search_quality.py --quick
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cifar, emit
from bundle.manifest import load_manifest
from bundle.preprocess import encoder_input
from bundle.runtime import Encoder
from bundle.sources import iter_image_bytes

ROOT = Path(__file__).resolve().parents[1]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def edit(data: bytes, name: str, rng: np.random.Generator) -> bytes:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    if name == "crop":
        out = image.crop((int(0.1 * w), int(0.1 * h), int(0.9 * w), int(0.9 * h))).resize(
            (w, h), Image.BICUBIC
        )
    elif name == "flip":
        out = ImageOps.mirror(image)
    elif name == "rotation":
        out = image.rotate(15, resample=Image.BICUBIC, expand=False, fillcolor=(0, 0, 0))
    elif name == "colour":
        out = ImageEnhance.Color(ImageEnhance.Brightness(image).enhance(1.2)).enhance(0.5)
    elif name == "blur":
        out = image.filter(ImageFilter.GaussianBlur(1.0))
    elif name == "jpeg":
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=30)
        return buffer.getvalue()
    elif name == "noise":
        pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 15, (h, w, 3))
        out = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    else:
        raise ValueError(name)
    return _png(out)


EDITS = ("crop", "flip", "rotation", "colour", "blur", "jpeg", "noise")


def embed(encoder: Encoder, manifest, payloads: list[bytes]) -> np.ndarray:
    out = [
        encoder(
            encoder_input(payloads[i : i + 256], manifest.input_size, manifest.mean, manifest.std)
        )
        for i in range(0, len(payloads), 256)
    ]
    vectors = np.concatenate(out)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", default=str(ROOT / "models" / "compact-cifar10"))
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    import imagehash

    manifest = load_manifest(args.bundle)
    encoder = Encoder(manifest, device="cpu", intra_threads=2)
    payloads = [data for _, data in iter_image_bytes(cifar("test"))]
    if args.quick:
        payloads = payloads[:2000]
    queries = 200 if args.quick else args.queries
    rng = np.random.default_rng(0)
    picks = rng.choice(len(payloads), size=queries, replace=False)
    bank = embed(encoder, manifest, payloads)
    hashes = np.array([imagehash.phash(Image.open(io.BytesIO(d))).hash.ravel() for d in payloads])
    result: dict = {"indexed": len(payloads), "queries": int(queries), "ours": {}, "phash": {}}
    print(f"indexed {len(payloads)} images; {queries} queries per edit")
    print(f"{'edit':<10} {'ours top-1':>10} {'pHash top-1':>12}")
    for name in EDITS:
        edited = [edit(payloads[i], name, rng) for i in picks]
        found = (embed(encoder, manifest, edited) @ bank.T).argmax(1)
        ours = float((found == picks).mean())
        edited_hashes = np.array(
            [imagehash.phash(Image.open(io.BytesIO(d))).hash.ravel() for d in edited]
        )
        distances = (edited_hashes[:, None, :] != hashes[None, :, :]).sum(-1)
        # Ties in Hamming distance are common: count a hit only if the original is the unique nearest.
        best = distances.min(1)
        unique = (distances == best[:, None]).sum(1) == 1
        phash = float(((distances.argmin(1) == picks) & unique).mean())
        result["ours"][name], result["phash"][name] = ours, phash
        print(f"{name:<10} {ours:>10.3f} {phash:>12.3f}")
    result["ours_mean"] = float(np.mean(list(result["ours"].values())))
    result["phash_mean"] = float(np.mean(list(result["phash"].values())))
    print(f"{'mean':<10} {result['ours_mean']:>10.3f} {result['phash_mean']:>12.3f}")
    emit(result)


if __name__ == "__main__":
    main()
