"""A real multi-node Ray cluster simulated on this machine, for the Ray tests (import after
``pytest.importorskip("ray")``): each node its own raylet and processes, this process the driver."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import ray
from ray import cluster_utils


@contextlib.contextmanager
def ray_cluster(*workers: dict[str, Any]) -> Iterator[Any]:
    """A head node of one CPU and one node per ``workers`` entry (``Cluster.add_node`` arguments),
    joined by this process; shut down on leaving."""
    cluster = cluster_utils.Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    try:
        for worker in workers:
            cluster.add_node(**worker)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace="simclr", log_to_driver=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
