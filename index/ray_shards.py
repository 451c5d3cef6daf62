"""Sharded collections whose shards live in Ray actors on a cluster's nodes (``simclr-search[ray]``).

Layout on disk, under the store's root (the same path on every node):
``<root>/<name>/sharding.json`` (shard count, settings, the node each shard lives on) and
``<root>/<name>/shard-<i>/`` (an ordinary collection: ``meta.sqlite`` + ``index.faiss``).

Each shard is one named, detached actor (namespace ``simclr``; the name carries a hash of the root,
the collection and the shard number), pinned to the node that holds its files. Any process that
opens the store (the indexing job, the server) attaches to the same actors, so each shard keeps one
writer. ``max_restarts=-1``: an actor that dies is started again on its node, and its constructor
opens the collection from its files, replaying the SQLite change log as a single collection does
after a crash; ``max_task_retries=-1``: a call that was running when it died is sent again to the
new one (every shard method is safe to repeat: upserts replace by id). Whatever a shard acknowledged
was committed to its SQLite first, so a killed actor loses nothing acknowledged.

Shard actors ask for no CPU (``num_cpus=0``): they are I/O and short FAISS searches, and must not
take the slots the indexing pipeline's decode tasks and encoder actors need.

Importing this module imports Ray; nothing in the embedded default imports it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from simclr_search.index.collection import Collection, CollectionConfig
from simclr_search.index.errors import (
    AlreadyExists,
    IncompatibleSpace,
    NotFound,
    StorageFailure,
    StoreError,
)
from simclr_search.index.sharded import ShardedCollection
from simclr_search.index.store import check_name

log = logging.getLogger("simclr.index")
NAMESPACE = "simclr"
LAYOUT = "sharding.json"
#: Threads per shard actor: searches run beside a write (the collection's own locks order them).
SHARD_CONCURRENCY = 4
#: How long one shard call may take before the caller is told the shard is unreachable.
CALL_TIMEOUT_S = 600.0


class ShardActor:
    """One shard: a :class:`Collection` opened (or created) from ``folder`` in this actor."""

    def __init__(self, folder: str, config: dict[str, Any]) -> None:
        path = Path(folder)
        if path.exists() and not (path / "meta.sqlite").exists() and not any(path.iterdir()):
            path.rmdir()  # a create cut short before its first file: start it again
        if (path / "meta.sqlite").exists():
            self.collection = Collection.open(path)
        else:
            self.collection = Collection.create(path, CollectionConfig(**config))

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self.collection, method)(*args)

    def pid(self) -> int:
        return os.getpid()

    def node(self) -> str:
        """The id of the Ray node this shard runs on (where its files are)."""
        return ray.get_runtime_context().get_node_id()

    def close(self) -> None:
        self.collection.close()


_remote_actor = None


def _actor_class():
    """``ShardActor`` as a Ray actor class, made once per process (after ``ray`` is imported)."""
    global _remote_actor
    if _remote_actor is None:
        _remote_actor = ray.remote(ShardActor)
    return _remote_actor


def connect(address: str) -> bool:
    """Join the Ray cluster at ``address`` (``auto``, ``ray://host:port``, ``host:port``) or start
    one in this process (``local``); True if this process started it."""
    if ray.is_initialized():
        return False
    if address in ("", "local"):
        ray.init(
            namespace=NAMESPACE,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
        return True
    ray.init(
        address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING
    )
    return False


class RayShards:
    """:class:`index.sharded.ShardCalls` over shard actors: each call a remote method, all at once."""

    def __init__(self, actors: Sequence[Any]) -> None:
        self.actors = list(actors)
        self.count = len(self.actors)

    def run(self, calls: Sequence[tuple[int, str, tuple]]) -> list[Any]:
        futures = [self.actors[shard].call.remote(method, *args) for shard, method, args in calls]
        try:
            return ray.get(futures, timeout=CALL_TIMEOUT_S)
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, StoreError):
                raise exc.cause from None  # the shard's own error (NotFound, InvalidArgument ...)
            raise
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as exc:
            raise StorageFailure(
                f"a shard did not answer ({type(exc).__name__}); acknowledged writes are on its"
                " disk: retry once the cluster has restarted it"
            ) from exc


class ShardedStore:
    """A folder of sharded collections served by Ray actors; the interface of :class:`index.store.Store`.

    Args:
        root: the store's folder (the same path on every node that holds shards).
        shards: how many shards a new collection gets (an existing one keeps its own count).
        address: the Ray cluster (see :func:`connect`).
    """

    def __init__(self, root: str | Path, shards: int = 4, address: str = "local") -> None:
        if shards < 1:
            raise ValueError(f"a sharded collection needs at least one shard, got {shards}")
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.shards = shards
        self.started_cluster = connect(address)
        self._tag = hashlib.blake2b(str(self.root).encode(), digest_size=6).hexdigest()
        self._open: dict[str, ShardedCollection] = {}
        self._actors: dict[str, list[Any]] = {}
        self._lock = threading.Lock()

    # -- the Store interface ----------------------------------------------------------------------
    def list(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if (p / LAYOUT).exists())

    def create(
        self, name: str, config: CollectionConfig, exist_ok: bool = False
    ) -> ShardedCollection:
        check_name(name)
        with self._lock:
            folder = self.root / name
            if (folder / "meta.sqlite").exists():
                raise AlreadyExists(
                    f"collection {name!r} exists unsharded in {self.root}; index into another"
                    " collection name or store to shard it"
                )
            if (folder / LAYOUT).exists():
                existing = self._get_locked(name).config
                if existing.space and config.space and existing.space != config.space:
                    raise IncompatibleSpace(
                        f"collection {name!r} holds vectors of {existing.space!r}, not of"
                        f" {config.space!r}: index into another store or collection"
                    )
                if exist_ok and (existing.dim, existing.metric) == (config.dim, config.metric):
                    return self._open[name]
                raise AlreadyExists(
                    f"collection {name!r} exists (dim {existing.dim}, metric {existing.metric})"
                )
            folder.mkdir(parents=True, exist_ok=True)
            nodes = _cpu_nodes()
            layout = {
                "shards": self.shards,
                "config": dict(config.__dict__),
                "nodes": [nodes[i % len(nodes)] for i in range(self.shards)],
            }
            tmp = folder / (LAYOUT + ".tmp")
            tmp.write_text(json.dumps(layout, indent=1))
            os.replace(tmp, folder / LAYOUT)  # the collection exists once this file does
            return self._get_locked(name)

    def get(self, name: str) -> ShardedCollection:
        check_name(name)
        with self._lock:
            return self._get_locked(name)

    def _get_locked(self, name: str) -> ShardedCollection:
        if name not in self._open:
            path = self.root / name / LAYOUT
            if not path.exists():
                raise NotFound(f"sharded collection {name!r} does not exist; known: {self.list()}")
            layout = json.loads(path.read_text())
            config = CollectionConfig(**layout["config"])
            actors = [
                self._shard_actor(name, i, layout["nodes"][i], config)
                for i in range(layout["shards"])
            ]
            self._actors[name] = actors
            self._open[name] = ShardedCollection(name, config, RayShards(actors))
        return self._open[name]

    def _shard_actor(self, name: str, shard: int, node: str, config: CollectionConfig):
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        options: dict[str, Any] = {
            "name": f"shard-{self._tag}-{name}-{shard}",
            "namespace": NAMESPACE,
            "lifetime": "detached",
            "get_if_exists": True,
            "num_cpus": 0,
            "max_restarts": -1,
            "max_task_retries": -1,
            "max_concurrency": SHARD_CONCURRENCY,
        }
        if node in alive:  # its files are on that node's disk
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=False)
        else:
            log.warning(
                "shard %d of %r was made on node %s, which is not in the cluster now; starting it"
                " where Ray places it (its folder must be on storage that node sees)",
                shard,
                name,
                node,
            )
        folder = str(self.root / name / f"shard-{shard:03d}")
        return _actor_class().options(**options).remote(folder, dict(config.__dict__))

    def actors(self, name: str) -> list[Any]:
        """The shard actors of collection ``name`` (for operators and tests: kill one, see it back)."""
        self.get(name)
        return list(self._actors[name])

    def drop(self, name: str) -> None:
        check_name(name)
        with self._lock:
            if not (self.root / name / LAYOUT).exists():
                raise NotFound(f"sharded collection {name!r} does not exist")
            self._get_locked(name)
            self._stop(name)
            shutil.rmtree(self.root / name)

    def stats(self) -> dict[str, Any]:
        return {name: self.get(name).stats() for name in self.list()}

    def close(self) -> None:
        """Snapshot every shard. Actors of a cluster this process joined stay up for the other
        processes that use them; those of a cluster it started are stopped with it."""
        with self._lock:
            for name in list(self._open):
                if self.started_cluster:
                    self._stop(name)
                else:
                    self._open[name].snapshot()
            self._open.clear()
            self._actors.clear()
        if self.started_cluster and ray.is_initialized():
            ray.shutdown()

    def _stop(self, name: str) -> None:
        """Close (snapshot) each shard of ``name`` and end its actor."""
        actors = self._actors.pop(name, [])
        self._open.pop(name, None)
        ray.get([actor.close.remote() for actor in actors], timeout=CALL_TIMEOUT_S)
        for actor in actors:
            ray.kill(actor, no_restart=True)


def _cpu_nodes() -> list[str]:
    """Alive nodes with CPUs, sorted by id: where new shards are placed, round-robin."""
    nodes = sorted(
        n["NodeID"] for n in ray.nodes() if n["Alive"] and n.get("Resources", {}).get("CPU", 0) > 0
    )
    if not nodes:
        raise StorageFailure("the Ray cluster has no alive node with CPUs to hold shards")
    return nodes
