"""``simclr index FOLDER``: index a library locally (the service core in this process) or through a
running server (``--remote``); resumable, with a progress bar and a failure report."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

from simclr_search.serving.client.commands import add_connection_arguments, grpc_errors


def index_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="index a folder of images (resumable; duplicates by content hash are skipped)",
        add_help=add_help,
    )
    p.add_argument("folder", help="folder (recursive) or .tar/.tar.gz archive of images")
    p.add_argument("--collection", default="")
    p.add_argument(
        "--remote", action="store_true", help="send to --server instead of indexing locally"
    )
    p.add_argument(
        "--bundle",
        default=os.environ.get("SIMCLR_BUNDLE", "bundle"),
        help="local mode: model bundle",
    )
    p.add_argument(
        "--store", default=os.environ.get("SIMCLR_STORE", "store"), help="local mode: index folder"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--int8", action="store_true")
    p.add_argument("--progress", type=lambda v: v.lower() in {"1", "true", "yes"}, default=True)
    add_connection_arguments(p)
    return p


@grpc_errors
def index_main(args, argv=None) -> int:
    from simclr_search.serving.jobs.indexer import bulk_config, index_local, index_remote

    if args.remote:
        report = index_remote(
            args.folder, args.server, args.token or None, args.collection, args.progress
        )
    else:
        config = bulk_config(Path(args.bundle), Path(args.store), args.int8, args.batch_size)
        report = asyncio.run(
            index_local(
                args.folder, config, args.collection, args.batch_size, progress=args.progress
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
