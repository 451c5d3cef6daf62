"""``simclr index FOLDER``: index a library locally (the service core in this process) or through a
running server (``--remote``); resumable, with a progress bar and a failure report."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from simclr_search.serving.client.commands import (
    ENV_PREFIX,
    Connection,
    add_connection_arguments,
    grpc_errors,
)
from simclr_search.settings import add_arguments, from_args, setting

#: Images per batch when indexing in this process (the micro-batcher's size; writes are in-process).
LOCAL_BATCH = 64


@dataclass
class IndexSettings:
    """``simclr index``'s settings (besides the folder and the server connection)."""

    collection: str = setting("", "collection to index into (default: the server's)")
    remote: bool = setting(False, "send to --server instead of indexing in this process", env="")
    bundle: Path = setting(Path("bundle"), "local mode: model bundle")
    store: Path = setting(Path("store"), "local mode: index folder")
    batch_size: int = setting(
        0, "images per batch (0: 64; with --ray, 64 to 256 by the library's file sizes)"
    )
    int8: bool = setting(False, "local mode: the bundle's INT8 encoder")
    progress: bool = setting(True, "progress bar", env="")
    shards: int = setting(
        4, "with --ray: shards of a new collection (an existing one keeps its own)"
    )
    embedders: int = setting(
        0, "with --ray: encoder actors (0: one per GPU of the cluster, else one per CPU)"
    )


def index_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="index a folder of images (resumable; duplicates by content hash are skipped)",
        add_help=add_help,
    )
    p.add_argument("folder", help="folder (recursive) or .tar/.tar.gz archive of images")
    add_arguments(p, IndexSettings, ENV_PREFIX)
    p.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default="",
        metavar="ADDRESS",
        help="index on Ray Data into a sharded collection (pip install 'simclr-search[ray]'):"
        " the cluster's address (auto, host:port, ray://host:port); alone: a Ray started here",
    )
    add_connection_arguments(p)
    return p


@grpc_errors
def index_main(args, argv=None) -> int:
    from simclr_search.serving.jobs.indexer import bulk_config, index_local, index_remote

    settings = from_args(IndexSettings, args)
    if args.ray and settings.remote:
        raise SystemExit("simclr index: --ray and --remote are two ways to index; choose one")
    if args.ray:
        report = _index_on_ray(args, settings)
    elif settings.remote:
        link = from_args(Connection, args)
        report = index_remote(
            args.folder, link.server, link.token or None, settings.collection, settings.progress
        )
    else:
        batch_size = settings.batch_size or LOCAL_BATCH
        config = bulk_config(settings.bundle, settings.store, settings.int8, batch_size)
        report = asyncio.run(
            index_local(
                args.folder,
                config,
                settings.collection,
                batch_size,
                progress=settings.progress,
            )
        )
    print(report.summary())
    print(
        json.dumps(
            {
                "indexed": report.indexed,
                "duplicates": report.duplicates,
                "failed": report.failed,
                "unreadable": report.unreadable,
                "seconds": report.seconds,
                "images_per_s": report.images_per_s,
            }
        )
    )
    return 0


def _index_on_ray(args, settings: IndexSettings):
    try:
        from simclr_search.serving.jobs.ray_index import RaySettings, index_on_ray
    except ImportError as exc:
        raise SystemExit(
            f"simclr index --ray needs Ray ({exc}); install it with: pip install 'simclr-search[ray]'"
        ) from exc
    return index_on_ray(
        args.folder,
        settings.bundle,
        settings.store,
        settings.collection or "images",
        RaySettings(args.ray, settings.shards, settings.embedders, settings.batch_size),
        int8=settings.int8,
        progress=settings.progress,
    )
