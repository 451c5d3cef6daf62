"""Search by image puts the very copy before a near-duplicate photo (serving/tie_break.py), through
a real server; every write path stores the thumbnail signature, and it survives a restart."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from simclr_search.bundle.manifest import load_manifest
from simclr_search.bundle.sources import iter_image_bytes
from simclr_search.index.store import Store
from simclr_search.protos.simclr.v1 import search_pb2 as pb
from simclr_search.serving.client import Client
from simclr_search.serving.core.images import ImageLimits, decode_for_model
from simclr_search.serving.core.photo_views import middle
from simclr_search.serving.core.tie_break import signatures
from simclr_search.serving.server.app import start_server
from simclr_search.serving.server.settings import ServerOptions
from tests.conftest import cifar_archive
from tests.serving.conftest import make_config

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "compact-cifar10"


def _blurred(data: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").filter(ImageFilter.GaussianBlur(1.0)).save(
        buffer, "PNG"
    )
    return buffer.getvalue()


def test_a_blurred_copy_finds_its_original_before_the_near_duplicate(
    tmp_path: Path, loop_thread
) -> None:
    """CIFAR-10's test split holds 0436 and 0529, one car photographed once and cropped twice. With
    the shipped encoder a blurred 0436 embeds nearer 0529 (by 0.01, a near tie); the thumbnail
    ordering returns 0436. Why this pair: it is one of bench_search_quality's blur misses."""
    wanted = {f"test/automobile/{n:04d}.jpg" for n in [436, 529, *range(400, 420)]}
    images = {}
    for record, data in iter_image_bytes(cifar_archive("test")):
        name = record.uri.split("::")[-1]
        if name in wanted:
            images[name.split("/")[-1][:4]] = data
        if len(images) == len(wanted):
            break
    config = make_config(SHIPPED, tmp_path / "store")
    running = loop_thread.run(
        start_server(config, ServerOptions(address="127.0.0.1:0", metrics_port=0, http_port=0))
    )
    try:
        with Client(f"127.0.0.1:{running.port}") as client:
            client.upsert_images(sorted(images.items()))
            query = _blurred(images["0436"])
            by_vector = client.search(vector=client.embed([query])[0], k=2)  # embedding alone
            assert [h.id for h in by_vector] == ["0529", "0436"]
            assert by_vector[0].score - by_vector[1].score < config.tie_break_margin
            assert [h.id for h in client.search(image=query, k=2)] == ["0436", "0529"]
            assert client.search(image=query, k=1)[0].id == "0436"
            assert client.search(image=images["0529"], k=1)[0].id == "0529"
    finally:
        loop_thread.run(running.stop())
    off = make_config(SHIPPED, tmp_path / "store", tie_break_margin=0.0)
    running = loop_thread.run(
        start_server(off, ServerOptions(address="127.0.0.1:0", metrics_port=0, http_port=0))
    )
    try:
        with Client(f"127.0.0.1:{running.port}") as client:
            assert client.search(image=_blurred(images["0436"]), k=1)[0].id == "0529"
    finally:
        loop_thread.run(running.stop())


def test_every_write_path_stores_the_thumbnail_and_it_survives_a_restart(
    tiny_bundle, tmp_path: Path, loop_thread
) -> None:
    bundle, library = tiny_bundle
    payloads = [data for _, data in iter_image_bytes(library)][:6]
    config = make_config(bundle, tmp_path / "store")
    running = loop_thread.run(
        start_server(config, ServerOptions(address="127.0.0.1:0", metrics_port=0, http_port=0))
    )
    try:
        with Client(f"127.0.0.1:{running.port}") as client:
            client.upsert_images([("up0", payloads[0]), ("up1", payloads[1])])
            results = list(
                client.index_images([(f"ix{i}", payloads[i], "", {}) for i in (2, 3, 4)])
            )
            assert [r.status for r in results] == [pb.IndexImagesResult.INDEXED] * 3
            client.upsert_vectors([("vec", client.embed([payloads[5]])[0])])
    finally:
        loop_thread.run(running.stop())
    size = load_manifest(bundle).input_size
    expected = signatures(
        np.stack([middle(decode_for_model(d, size, ImageLimits())) for d in payloads])
    )
    store = Store(tmp_path / "store")
    try:
        stored = {
            item.external_id: item.signature
            for item in store.get("images").get(["up0", "up1", "ix2", "ix3", "ix4", "vec"])
        }
    finally:
        store.close()
    # the thumbnail first, then the file's facts and the local features (copy detection, on by
    # default)
    from simclr_search.serving.core.signature import parse
    from simclr_search.serving.core.tie_break import SIGNATURE_BYTES

    assert [stored[i][:SIGNATURE_BYTES] for i in ("up0", "up1")] == expected[:2]
    assert [stored[f"ix{i}"][:SIGNATURE_BYTES] for i in (2, 3, 4)] == expected[2:5]
    for name, data in zip(("up0", "up1", "ix2", "ix3", "ix4"), payloads, strict=False):
        read = parse(stored[name])
        assert read.features is not None, name
        assert read.facts is not None and read.facts.bytes == len(data), name
    assert stored["vec"] == b""  # stored by vector: no image, no thumbnail


def test_indexing_again_gives_a_store_from_before_thumbnails_its_thumbnails(
    tiny_bundle, tmp_path: Path, loop_thread
) -> None:
    """Resumable indexing skips what is indexed, but not an item stored without a thumbnail (a
    store from an earlier version): indexing the library again stores it, once."""
    import sqlite3

    bundle, library = tiny_bundle
    payloads = [data for _, data in iter_image_bytes(library)][:4]
    items = [(f"ix{i}", data, "", {}) for i, data in enumerate(payloads)]
    config = make_config(bundle, tmp_path / "store")

    def index_all() -> list[int]:
        running = loop_thread.run(
            start_server(config, ServerOptions(address="127.0.0.1:0", metrics_port=0, http_port=0))
        )
        try:
            with Client(f"127.0.0.1:{running.port}") as client:
                return [r.status for r in client.index_images(items)]
        finally:
            loop_thread.run(running.stop())

    assert index_all() == [pb.IndexImagesResult.INDEXED] * 4
    with sqlite3.connect(tmp_path / "store" / "images" / "meta.sqlite") as conn:
        conn.execute("UPDATE items SET signature = NULL WHERE external_id IN ('ix1', 'ix2')")
        conn.execute(  # a thumbnail alone: stored before local features were
            "UPDATE items SET signature = substr(signature, 1, 192) WHERE external_id = 'ix3'"
        )
    statuses = index_all()
    assert statuses[1:4] == [pb.IndexImagesResult.INDEXED] * 3
    assert statuses[0] == pb.IndexImagesResult.SKIPPED_DUPLICATE
    assert index_all() == [pb.IndexImagesResult.SKIPPED_DUPLICATE] * 4
    store = Store(tmp_path / "store")
    try:
        col = store.get("images")
        assert col.count() == 4
        assert all(len(item.signature) > 192 for item in col.get([i for i, *_ in items]))
    finally:
        store.close()
