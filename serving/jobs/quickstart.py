"""``simclr quickstart``: the whole product on the embedded default, end to end.

1. a model bundle: the one the repository ships (``models/compact-cifar10``, reproduced by the
   commands in its ``README.md``), or ``--bundle``;
2. index an image library (default: CIFAR-10 test from ``../shared`` if present) into a local store
   (FAISS on disk + SQLite), resumably;
3. start ``simclr serve`` as a real server process on a free loopback port;
4. reverse image search with edited copies (photos: cropped, turned, captioned, bordered, inset,
   stored sideways; thumbnails: cropped, flipped, recoloured) of indexed images, and a
   denoise call;
5. print the results and save a PNG grid (query, then its neighbours) to ``runs/quickstart/grid.png``;
6. stop the server gracefully (the index is snapshotted).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from simclr_search.bundle.manifest import load_manifest
from simclr_search.bundle.sources import iter_image_bytes
from simclr_search.edits import edited
from simclr_search.serving.client import Client
from simclr_search.serving.jobs.indexer import bulk_config, index_local

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_BUNDLE = ROOT / "models" / "compact-cifar10"
DEFAULT_LIBRARY = ROOT.parent / "shared" / "datasets" / "cifar10-jpg" / "test.tar.gz"


#: The edits the quickstart shows on photos (``simclr_search.edits`` has them all).
PHOTO_EDITS = ("crop", "rotate90", "text", "border", "inset", "exif")


def edits(data: bytes) -> dict[str, bytes]:
    """Edited copies of an image: for a photo (shorter side 128 px or more) a strong crop, a
    quarter turn, caption bars, a border, the photo inset in a larger picture and a sideways phone
    file; for a thumbnail a crop, a mirror image and a recolouring."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    if min(w, h) >= 128:
        rng = np.random.default_rng(0)
        return {name: edited(data, name, rng) for name in PHOTO_EDITS}
    crop = image.crop((int(0.1 * w), int(0.1 * h), int(0.9 * w), int(0.9 * h))).resize(
        (w, h), Image.BICUBIC
    )
    recolour = ImageEnhance.Color(ImageEnhance.Brightness(image).enhance(1.25)).enhance(0.6)
    out = {}
    for name, copy in {
        "crop": crop,
        "flip": ImageOps.mirror(image),
        "recolour": recolour,
    }.items():
        buffer = io.BytesIO()
        copy.save(buffer, "PNG")
        out[name] = buffer.getvalue()
    return out


def start_server(bundle: Path, store: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """``simclr serve`` in a child process on a free loopback port; returns it and its address."""
    command = [
        sys.executable,
        "-m",
        "simclr_search.cli.main",
        "serve",
        "--bundle",
        str(bundle),
        "--store",
        str(store),
    ]
    command += ["--address", "127.0.0.1:0", "--metrics-port", "0", "--http-port", "0", *extra]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if "listening on port" not in line:
        proc.kill()
        raise RuntimeError(f"the server did not start: {line!r}")
    return proc, f"127.0.0.1:{int(line.rsplit(' ', 1)[-1])}"


def grid(rows: list[list[bytes]], path: Path, cell: int = 64) -> None:
    width = max(len(r) for r in rows)
    canvas = Image.new("RGB", (width * (cell + 4), len(rows) * (cell + 4)), "white")
    for y, row in enumerate(rows):
        for x, data in enumerate(row):
            tile = Image.open(io.BytesIO(data)).convert("RGB").resize((cell, cell), Image.NEAREST)
            canvas.paste(tile, (x * (cell + 4), y * (cell + 4)))
    canvas.save(path)


def _search_edits(
    client: Client, payloads: dict[str, bytes], picks: list[str], k: int
) -> tuple[dict[str, list[bool]], list[list[bytes]]]:
    """Search with edited copies of ``picks``; per edit whether the original came first, and the
    rows of the grid (query, then its hits)."""
    top1: dict[str, list[bool]] = {}
    rows: list[list[bytes]] = []
    for uri in picks:
        for name, data in edits(payloads[uri]).items():
            hits = client.search(image=data, k=k)
            found = hits[0].uri == uri if hits else False
            top1.setdefault(name, []).append(found)
            print(
                f"      {name:<9} {_short(uri):<14} -> "
                + ", ".join(f"{_short(h.uri)} ({h.score:.3f})" for h in hits[:3])
                + ("   [original found first]" if found else "")
                + (
                    f" [is_copy, p={hits[0].copy_probability:.2f}]"
                    if hits and hits[0].is_copy
                    else ""
                )
            )
            rows.append([data] + [payloads[h.uri] for h in hits if h.uri in payloads])
    return top1, rows


def _denoise_demo(client: Client, data: bytes, out: Path) -> dict | str:
    """Denoise a noisy copy of ``data`` (sigma 25); PSNR before and after, and a side-by-side PNG."""
    clean = _pixels(data)
    noisy = _noisy(data)
    try:
        denoised = _pixels(client.denoise(noisy, 25.0))
    except grpc.RpcError as exc:
        print(f"      denoise: {exc.code().name}: {exc.details()}")
        return f"{exc.code().name}: {exc.details()}"
    denoise = {
        "noisy_psnr_db": _psnr(_pixels(noisy), clean),
        "denoised_psnr_db": _psnr(denoised, clean),
    }
    Image.fromarray(np.concatenate([clean, _pixels(noisy), denoised], axis=1)).resize(
        (clean.shape[1] * 3 * 4, clean.shape[0] * 4), Image.NEAREST
    ).save(out / "denoise.png")
    print(
        f"      denoise (sigma 25): noisy {denoise['noisy_psnr_db']:.2f} dB -> "
        f"{denoise['denoised_psnr_db']:.2f} dB; clean | noisy | denoised: {out / 'denoise.png'}"
    )
    return denoise


def run(bundle: Path, library: Path, out: Path, queries: int, k: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    # One store per encoder: a new bundle's vectors are not comparable with an old one's, and the
    # quickstart's store is its own scratch space (a server refuses a store of another encoder).
    store = out / f"store-{load_manifest(bundle).encoder_sha256[:12]}"
    started = time.perf_counter()
    print(f"[1/5] model bundle: {bundle}")
    print(f"[2/5] indexing {library} into {store}")
    report = asyncio.run(index_local(library, bulk_config(bundle, store), batch_size=64))
    print("      " + report.summary().replace("\n", "\n      "))
    print("[3/5] starting the server")
    proc, address = start_server(bundle, store)
    payloads = {record.uri: data for record, data in iter_image_bytes(library)}
    picks = list(payloads)[:: max(1, len(payloads) // queries)][:queries]
    try:
        with Client(address) as client:
            print(f"      {address}: {client.info().collections[0].count} images indexed")
            print(f"[4/5] searching with edited copies of {len(picks)} indexed images")
            top1, rows = _search_edits(client, payloads, picks, k)
            denoise = _denoise_demo(client, payloads[picks[0]], out)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    grid(rows, out / "grid.png")
    summary = {
        "indexed": report.indexed + report.duplicates,
        "index_images_per_s": report.images_per_s,
        "top1_hit_rate": {name: float(np.mean(v)) for name, v in top1.items()},
        "denoise": denoise,
        "grid": str(out / "grid.png"),
        "seconds": time.perf_counter() - started,
    }
    print(f"[5/5] grid of queries and neighbours: {out / 'grid.png'}")
    print(json.dumps(summary))
    return summary


def _short(uri: str) -> str:
    """``class/file.jpg`` of a file path or archive member, for display."""
    return "/".join(Path(uri.split("::")[-1]).parts[-2:])


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def _noisy(data: bytes, sigma: float = 25.0) -> bytes:
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)
    noisy = np.clip(
        pixels + np.random.default_rng(0).normal(0, sigma, pixels.shape), 0, 255
    ).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, "PNG")
    return buffer.getvalue()


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, add_help=add_help
    )
    p.add_argument(
        "library",
        nargs="?",
        default=os.environ.get("SIMCLR_LIBRARY", str(DEFAULT_LIBRARY)),
        help="folder or archive of images to index (default: CIFAR-10 test from ../shared)",
    )
    p.add_argument(
        "--bundle", default=str(SHIPPED_BUNDLE), help="model bundle (default: the shipped one)"
    )
    p.add_argument("--out", default="runs/quickstart")
    p.add_argument("--queries", type=int, default=8)
    p.add_argument("-k", type=int, default=8)
    return p


def cli_main(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    library = Path(args.library)
    if not library.exists():
        raise FileNotFoundError(
            f"no image library at {library}; pass a folder: simclr quickstart /path/to/images"
        )
    run(Path(args.bundle), library, Path(args.out), args.queries, args.k)
    return 0
