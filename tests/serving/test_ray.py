"""Ray: ``simclr index --ray`` and sharded collections on a real multi-node cluster simulated here
(``ray.cluster_utils.Cluster``: a head and a worker node, each its own raylet and processes).

Checked: a folder indexed on Ray Data lands in shards on both nodes and searches exactly as the same
folder indexed locally into one collection; a shard actor killed mid-indexing is restarted from its
files and nothing acknowledged is lost (every image is there and a re-run finds nothing to do); the
gRPC server serves the sharded collection through its usual core, and FindDuplicates says plainly
that it is not available there.
"""

from __future__ import annotations

import asyncio
import tarfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.conftest import make_library

ray = pytest.importorskip("ray", reason="the [ray] extra is not installed")
pytest.importorskip("ray.cluster_utils")

from simclr_search.bundle.manifest import load_manifest  # noqa: E402
from simclr_search.index.collection import Collection, CollectionConfig  # noqa: E402
from simclr_search.index.ray_shards import ShardedStore  # noqa: E402
from simclr_search.serving.jobs.indexer import bulk_config, index_local  # noqa: E402
from simclr_search.serving.jobs.ray_index import (  # noqa: E402
    BATCH_BYTES,
    BATCH_ROWS,
    MAX_BATCH_ROWS,
    RaySettings,
    batch_rows,
    index_on_ray,
)
from tests.serving.ray_cluster import ray_cluster  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.distributed]
BUNDLE = Path(__file__).resolve().parents[2] / "models" / "compact-cifar10"


@pytest.fixture(scope="module")
def cluster():
    """Two nodes of one CPU each; this test process is the driver connected to it."""
    with ray_cluster({"num_cpus": 1}) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    return make_library(tmp_path_factory.mktemp("ray-lib") / "library", per_class=12)


def _settings(cluster) -> RaySettings:
    return RaySettings(address=cluster.address, shards=3, embedders=2, batch_size=16)


def test_batch_rows_follow_the_files_sizes(tmp_path: Path) -> None:
    """Thumbnails get long batches, photos short ones, archives (sizes unknown) the default."""

    def files(name: str, count: int, size: int) -> list[str]:
        folder = tmp_path / name
        folder.mkdir()
        for i in range(count):
            (folder / f"{i}.jpg").write_bytes(bytes(size))
        return [str(p) for p in sorted(folder.iterdir())]

    assert batch_rows(files("thumbs", 20, 2_000)) == MAX_BATCH_ROWS
    assert batch_rows(files("photos", 5, 3_000_000)) == BATCH_ROWS
    middle = files("middle", 4, BATCH_BYTES // 100)
    assert batch_rows(middle) == 100
    archive = tmp_path / "library.tar"
    archive.write_bytes(bytes(10_000_000))
    assert batch_rows([str(archive)]) == BATCH_ROWS
    assert batch_rows([str(archive), *middle]) == 100  # the files' sizes decide
    assert batch_rows([]) == BATCH_ROWS
    assert batch_rows([str(tmp_path / "gone.jpg")]) == BATCH_ROWS  # unreadable: the reader says


def test_ray_index_matches_one_local_collection(cluster, library: Path, tmp_path: Path) -> None:
    report = index_on_ray(
        library, BUNDLE, tmp_path / "sharded", "images", _settings(cluster), progress=False
    )
    images = sum(1 for p in library.rglob("*") if p.is_file())
    assert (report.indexed, report.failed, report.unreadable) == (images, 0, 0)

    local = asyncio.run(
        index_local(library, bulk_config(BUNDLE, tmp_path / "local", cores=1), progress=False)
    )
    assert local.indexed == images
    single = Collection.open(tmp_path / "local" / "images")
    store = ShardedStore(tmp_path / "sharded", address=cluster.address)
    sharded = store.get("images")
    try:
        assert sharded.count() == images
        nodes = set(ray.get([a.node.remote() for a in store.actors("images")]))
        assert len(nodes) == 2  # the shards are spread over both nodes
        probes = single.get(
            ["circle/000.jpg", "circle/001.png", "circle/002.webp", "square/005.webp"]
        )
        queries = np.stack([item.vector for item in probes])
        for want, got in zip(single.search(queries, 10), sharded.search(queries, 10), strict=True):
            assert [h.external_id for h in got] == [h.external_id for h in want]
            np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=1e-5)
        again = index_on_ray(
            library, BUNDLE, tmp_path / "sharded", "images", _settings(cluster), progress=False
        )
        assert (again.indexed, again.duplicates) == (0, images)  # resumable by content hash
    finally:
        single.close()
        store.close()


def test_ray_reads_uris_through_its_own_filesystems(cluster, tmp_path: Path) -> None:
    """A file:// URI (the path Ray's readers take for s3:// and gs://) with images and an archive,
    whose members are indexed one by one (ids and uris ``archive::member``, as locally), and a
    broken archive, reported as unreadable as locally."""
    library = make_library(tmp_path / "library", per_class=3)
    extra = make_library(tmp_path / "extra", per_class=1, seed=5)
    with tarfile.open(library / "more.tar", "w") as tar:
        for folder in sorted(extra.iterdir()):
            tar.add(folder, arcname=folder.name)
    (library / "broken.tar").write_bytes(b"not an archive " * 100)  # reported, not fatal
    uri = library.resolve().as_uri()
    report = index_on_ray(
        uri, BUNDLE, tmp_path / "store", "images", _settings(cluster), progress=False
    )
    assert (report.indexed, report.failed, report.unreadable) == (12, 0, 1)
    assert "broken.tar" in report.failures[0][0]
    store = ShardedStore(tmp_path / "store", address=cluster.address)
    try:
        item, member = store.get("images").get(["square/001.png", "more.tar::square/000.jpg"])
        assert item.uri == (library / "square" / "001.png").resolve().as_uri()
        assert member.uri == (library / "more.tar").resolve().as_uri() + "::square/000.jpg"
    finally:
        store.close()
    local = asyncio.run(
        index_local(library, bulk_config(BUNDLE, tmp_path / "local", cores=1), progress=False)
    )
    assert (local.indexed, local.unreadable) == (12, 1)
    with Collection.open(tmp_path / "local" / "images") as single:  # the same id for the member
        np.testing.assert_allclose(
            single.get(["more.tar::square/000.jpg"])[0].vector, member.vector, atol=1e-5
        )


def test_killed_shard_actor_loses_nothing_acknowledged(cluster, tmp_path: Path) -> None:
    library = make_library(tmp_path / "library", per_class=30)
    images = sum(1 for p in library.rglob("*") if p.is_file())
    store = ShardedStore(tmp_path / "sharded", shards=2, address=cluster.address)
    manifest = load_manifest(BUNDLE)
    store.create(
        "images", CollectionConfig(dim=manifest.embedding_dim, space=manifest.embedding_space)
    )
    victim = store.actors("images")[0]
    before = ray.get(victim.pid.remote())
    result: dict = {}
    job = threading.Thread(
        target=lambda: result.update(
            report=index_on_ray(
                library, BUNDLE, tmp_path / "sharded", "images", _settings(cluster), progress=False
            )
        )
    )
    job.start()
    sharded = store.get("images")
    deadline = time.monotonic() + 120
    while sharded.count() < 20 and time.monotonic() < deadline:  # some writes acknowledged
        time.sleep(0.05)
    acknowledged = sharded.count()
    ray.kill(victim, no_restart=False)  # as a crash: Ray restarts it from its files
    job.join(300)
    assert not job.is_alive()
    report = result["report"]
    assert report.failed == 0 and report.indexed == images
    assert 20 <= acknowledged < images  # the kill came mid-indexing
    assert ray.get(victim.pid.remote()) != before  # a new process opened the shard's files
    assert sharded.count() == images
    assert (
        len(sharded.get([f"circle/{i:03d}.{('jpg', 'png', 'webp')[i % 3]}" for i in range(30)]))
        == 30
    )
    store.close()


def test_server_serves_a_sharded_collection(
    cluster, library: Path, tmp_path: Path, loop_thread
) -> None:
    from simclr_search.serving.client import Client
    from simclr_search.serving.server.app import start_server
    from simclr_search.serving.server.settings import ServerOptions
    from tests.serving.conftest import make_config

    index_on_ray(library, BUNDLE, tmp_path / "store", "images", _settings(cluster), progress=False)
    config = make_config(BUNDLE, tmp_path / "store", ray=cluster.address)
    running = loop_thread.run(
        start_server(config, ServerOptions(address="127.0.0.1:0", metrics_port=0, http_port=0))
    )
    try:
        with Client(f"127.0.0.1:{running.port}") as client:
            photo = (library / "circle" / "004.png").read_bytes()
            hits = client.search(image=photo, k=3)
            assert hits[0].id == "circle/004.png"
            info = client.info()
            assert [c.count for c in info.collections] == [
                sum(1 for p in library.rglob("*") if p.is_file())
            ]
            with pytest.raises(grpc.RpcError) as err:
                list(client.find_duplicates())
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert "sharded" in err.value.details()
    finally:
        loop_thread.run(running.stop())
