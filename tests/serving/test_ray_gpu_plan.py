"""Ray: the plan ``simclr index --ray`` takes on a cluster with GPUs, on a node that declares one.

This machine has no GPU, so the node's GPU is a Ray resource only (``num_gpus=1``). Checked: the
job says it took the GPU plan (one encoder actor per GPU, asking for the GPU and no CPU; Ray Data
then runs the decode as CPU tasks before the actor stage instead of fusing it in), the actor ran
(the GPU node is the only place it fits), and ONNX Runtime in it, finding no CUDA device, fell back
to its CPU provider: every vector equals a local index's. On a real GPU node the same actor gets
the CUDA provider (``bundle.runtime.providers``).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_library

pytest.importorskip("ray", reason="the [ray] extra is not installed")

from simclr_search.index.collection import Collection
from simclr_search.index.ray_shards import ShardedStore
from simclr_search.serving.jobs.indexer import bulk_config, index_local
from simclr_search.serving.jobs.ray_index import RaySettings, index_on_ray
from tests.serving.ray_cluster import ray_cluster

pytestmark = [pytest.mark.slow, pytest.mark.distributed]
BUNDLE = Path(__file__).resolve().parents[2] / "models" / "compact-cifar10"


@pytest.fixture(scope="module")
def gpu_cluster():
    """A CPU head and a worker node that declares one GPU."""
    with ray_cluster({"num_cpus": 1, "num_gpus": 1}) as cluster:
        yield cluster


def test_gpu_plan_indexes_as_locally(gpu_cluster, tmp_path: Path, caplog) -> None:
    library = make_library(tmp_path / "library", per_class=5)
    ids = [str(p.relative_to(library)) for p in sorted(library.rglob("*")) if p.is_file()]
    images = len(ids)
    settings = RaySettings(address=gpu_cluster.address, shards=2, batch_size=8)
    with caplog.at_level(logging.INFO, logger="simclr.index"):
        report = index_on_ray(
            library, BUNDLE, tmp_path / "sharded", "images", settings, progress=False
        )
    assert (report.indexed, report.failed, report.unreadable) == (images, 0, 0)
    assert "1 encoder actor(s), one GPU each" in caplog.text

    local = asyncio.run(
        index_local(library, bulk_config(BUNDLE, tmp_path / "local", cores=1), progress=False)
    )
    assert local.indexed == images
    store = ShardedStore(tmp_path / "sharded", address=gpu_cluster.address)
    try:
        with Collection.open(tmp_path / "local" / "images") as single:
            want = np.stack([item.vector for item in single.get(ids)])
        got = np.stack([item.vector for item in store.get("images").get(ids)])
        np.testing.assert_allclose(got, want, atol=1e-5)
    finally:
        store.close()
