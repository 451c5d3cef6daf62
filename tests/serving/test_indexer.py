"""``simclr index``: locally and through a server; resumable; bad files reported, not fatal."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from simclr_search.serving.client import Client
from simclr_search.serving.jobs.indexer import bulk_config, index_local, index_remote
from tests.serving.conftest import make_config

ROOT = Path(__file__).resolve().parents[2]


def test_local_index_is_resumable_and_reports_bad_files(tiny_bundle, tmp_path: Path) -> None:
    bundle, library = tiny_bundle
    (library / "circle" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    try:
        config = make_config(bundle, tmp_path / "store")
        first = asyncio.run(index_local(library, config, batch_size=8, progress=False))
        assert (first.indexed, first.failed, first.duplicates) == (48, 1, 0)
        assert "broken.jpg" in first.summary()
        again = asyncio.run(index_local(library, config, batch_size=8, progress=False))
        assert (again.indexed, again.duplicates) == (0, 48)
    finally:
        (library / "circle" / "broken.jpg").unlink()


def test_bulk_settings_index_the_same_vectors_and_reader_errors_surface(
    tiny_bundle, tmp_path: Path
) -> None:
    """Two single-threaded encoder streams (the batch-job settings) give the vectors one stream
    gives; a library that cannot be read fails the job with the reader's error."""
    from simclr_search.index.store import Store

    bundle, library = tiny_bundle
    plain = make_config(bundle, tmp_path / "plain")
    bulk = bulk_config(bundle, tmp_path / "bulk", batch_size=8, cores=2)
    assert (bulk.ort_threads, bulk.encoder_streams) == (1, 2)
    for config in (plain, bulk):
        report = asyncio.run(index_local(library, config, batch_size=8, progress=False))
        assert report.indexed == 48
    stores = [Store(tmp_path / name) for name in ("plain", "bulk")]
    try:
        ids = sorted(str(p.relative_to(library)) for p in library.rglob("*.*"))[:12]
        a, b = (s.get(plain.default_collection).get(ids) for s in stores)
        np.testing.assert_allclose([i.vector for i in a], [i.vector for i in b], atol=1e-5)
    finally:
        for store in stores:
            store.close()
    with pytest.raises(FileNotFoundError, match="not found"):
        asyncio.run(index_local(tmp_path / "missing", plain, progress=False))


def test_remote_index_and_cli_search(server, tiny_bundle, tmp_path: Path) -> None:
    _, address = server
    _, library = tiny_bundle
    report = index_remote(library, address, progress=False)
    assert report.indexed == 48 and report.failed == 0
    with Client(address) as client:
        assert client.info().collections[0].count == 48
    query = next(library.glob("square/*.png"))

    def simclr(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "simclr_search.cli.main", *args, "--server", address]
        return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)

    proc = simclr("search", str(query), "-k", "3")
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0].split()
    assert first[2] == f"square/{query.name}"  # the image itself, by its path in the library
    proc = simclr("embed", str(query))
    assert len(json.loads(proc.stdout)["embedding"]) == 64
    proc = simclr("search", "--id", "nope")
    assert proc.returncode == 1 and "NOT_FOUND" in proc.stderr


def test_cli_embed_streams_any_number_of_images(server, tiny_bundle, capsys) -> None:
    from simclr_search.serving.client.commands import EMBED_CHUNK, embed_main, embed_parser

    _, address = server
    _, library = tiny_bundle
    files = sorted(str(p) for p in library.rglob("*") if p.is_file())
    paths = files[: EMBED_CHUNK + 5]  # two requests
    assert len(paths) == EMBED_CHUNK + 5
    assert embed_main(embed_parser().parse_args([*paths, "--server", address])) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["image"] for line in lines] == paths
    with Client(address) as client:
        expected = client.embed([Path(paths[-1]).read_bytes()])[0]
    np.testing.assert_allclose(lines[-1]["embedding"], expected, atol=1e-5)
    missing = embed_parser().parse_args([paths[0], "nope.png", "--server", address])
    assert embed_main(missing) == 2 and "nope.png" in capsys.readouterr().err
