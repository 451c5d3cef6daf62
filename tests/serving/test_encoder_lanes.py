"""The service core's encoder lanes: on the CPU a backlog runs on single-threaded encoder copies side
by side, and gives the embeddings the multi-threaded encoder gives."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from simclr_search.bundle.sources import iter_image_bytes
from simclr_search.serving.core.service import SearchService
from tests.serving.conftest import make_config


def _embed_all(config, images: list[bytes]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Rows each of the batcher's lanes ran (one entry per lane); the images embedded as one request
    (more than max_batch: a backlog), then five of them one by one (never a backlog)."""

    async def main():
        service = SearchService(config)
        await service.start()
        ran = [0] * len(service.batcher.lanes)

        def counted(slot: int, lane):  # the real lane, counting the rows it runs
            def run(pixels: np.ndarray) -> np.ndarray:
                ran[slot] += len(pixels)
                return lane(pixels)

            return run

        service.batcher.lanes = [counted(i, lane) for i, lane in enumerate(service.batcher.lanes)]
        try:
            whole = await service.embed(images)
            single = np.concatenate([await service.embed([data]) for data in images[:5]])
            return ran, whole, single
        finally:
            await service.stop()

    return asyncio.run(main())


def test_auto_lanes_on_the_cpu_match_the_multi_threaded_encoder(
    tiny_bundle, tmp_path: Path
) -> None:
    bundle, library = tiny_bundle
    images = [data for _, data in iter_image_bytes(library)][:40]
    overrides = dict(max_batch=8, ort_threads=2)
    lanes, whole, single = _embed_all(make_config(bundle, tmp_path / "a", **overrides), images)
    none, plain, _ = _embed_all(
        make_config(bundle, tmp_path / "b", encoder_lanes=0, **overrides), images
    )
    # auto: one lane per --ort-threads thread on the CPU, and the backlog ran on them, 20 rows
    # each; the single images did not; 0: no lanes.
    assert (lanes, none) == ([20, 20], [])
    assert whole.shape == (40, plain.shape[1])
    np.testing.assert_allclose(whole, plain, atol=1e-5)  # in order, whichever lane ran a row
    np.testing.assert_allclose(single, plain[:5], atol=1e-5)
