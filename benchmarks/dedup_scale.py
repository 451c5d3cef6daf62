"""The scale part of ``bench_dedup.py``: FindDuplicates over a large collection, already embedded.

Vectors: the encoder's, for CIFAR-10 train and test and, past those 60,000, edited copies of train
images (mirrored, cropped by up to a fifth, re-encoded as JPEG at quality 30-70), so the library
holds real near-duplicates. Signatures: each item carries its own thumbnail and, as a 12-megapixel
photo would, facts and a full set of 400 ORB features (random positions and descriptors: CIFAR's
32 px pictures have none, and random ones cost what the matching of two different photos costs,
which is what nearly every candidate pair is), so every candidate pair the finder checks runs the
real local-feature matching. The groups found are therefore the embedding's alone and are not a
quality figure; the seconds are. The collection is written with the index's own API, then a real
server opens it and answers FindDuplicates through gRPC; the seconds are the call's, as a user
waits for it.
"""

from __future__ import annotations

import io
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from benchmarks.bench_copy_detection import Server
from benchmarks.common import cifar


def _cifar_bytes() -> list[bytes]:
    out = []
    for split in ("train", "test"):
        with tarfile.open(cifar(split)) as tar:
            out += [tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()]
    return out


def _edited(data: bytes, rng: np.random.Generator) -> np.ndarray:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    w, h = image.size
    cut = int(rng.integers(0, max(1, w // 5)))
    image = image.crop((cut, cut, w - int(rng.integers(0, max(1, w // 5))), h))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(30, 71)))
    return buffer.getvalue()


def _vectors(bundle: Path, count: int) -> tuple[np.ndarray, list[bytes]]:
    from simclr_search.bundle.manifest import load_manifest
    from simclr_search.bundle.preprocess import decode_square, normalize
    from simclr_search.bundle.runtime import Encoder
    from simclr_search.serving.core.tie_break import signatures

    manifest = load_manifest(bundle)
    encoder = Encoder(manifest, False, "cpu", 0)
    originals = _cifar_bytes()
    rng = np.random.default_rng(2026)
    out, thumbnails = [], []
    size = manifest.input_size
    with tqdm(total=count, desc="embedding the scale library", unit="img") as bar:
        for start in range(0, count, 512):
            batch = []
            for i in range(start, min(count, start + 512)):
                data = originals[i] if i < len(originals) else _edited(originals[i % 50_000], rng)
                batch.append(decode_square(data, size))
            pixels = np.stack(batch)
            out.append(encoder(normalize(pixels, manifest.mean, manifest.std)))
            thumbnails += signatures(pixels)
            bar.update(len(batch))
    return np.concatenate(out), thumbnails


def _signature(thumbnail: bytes, rng: np.random.Generator) -> bytes:
    from simclr_search.serving.core import local_features
    from simclr_search.serving.core.signature import PhotoFacts, compose

    points = rng.uniform((0, 0), (640, 480), (400, 2)).astype(np.float32)
    descriptors = rng.integers(0, 256, (400, 32), dtype=np.uint8)
    facts = PhotoFacts(4032, 3024, int(rng.integers(2_000_000, 6_000_000)), True)
    return compose(thumbnail, facts, local_features.pack(points, descriptors))


def scale_run(bundle: Path, count: int) -> dict:
    from simclr_search.bundle.manifest import load_manifest
    from simclr_search.index.collection import CollectionConfig
    from simclr_search.index.metadata import NewItem
    from simclr_search.index.store import Store
    from simclr_search.serving.client import Client

    manifest = load_manifest(bundle)
    vectors, thumbnails = _vectors(bundle, count)
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory(prefix="simclr-dedup-scale-") as tmp:
        store = Store(Path(tmp) / "store")
        collection = store.create(
            "images",
            CollectionConfig(dim=manifest.embedding_dim, space=manifest.embedding_space),
        )
        for start in range(0, count, 10_000):
            collection.add(
                [
                    NewItem(
                        f"item{i}",
                        vectors[i],
                        f"lib/{i}.jpg",
                        f"h{i}",
                        None,
                        _signature(thumbnails[i], rng),
                    )
                    for i in range(start, min(count, start + 10_000))
                ]
            )
        store.close()
        server = Server(bundle, Path(tmp) / "store")
        try:
            with Client(server.address, timeout=3600) as client:
                tick = time.perf_counter()
                groups = list(client.find_duplicates())
                seconds = time.perf_counter() - tick
        finally:
            server.stop()
    return {
        "items": count,
        "seconds": round(seconds, 1),
        "groups": len(groups),
        "copies": sum(len(g.copies) for g in groups),
    }
