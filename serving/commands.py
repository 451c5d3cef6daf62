"""Client-side commands: ``simclr search``, ``simclr embed``, ``simclr denoise``, ``simclr index``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import grpc

DEFAULT_ADDRESS = os.environ.get("SIMCLR_ADDRESS", "127.0.0.1:50051")


def _connection(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server", default=DEFAULT_ADDRESS, help="host:port of a running 'simclr serve'"
    )
    p.add_argument(
        "--token", default=os.environ.get("SIMCLR_TOKEN", ""), help="bearer token, if required"
    )
    p.add_argument("--timeout", type=float, default=60.0)


def _client(args):
    from serving.client import Client

    return Client(args.server, token=args.token or None, timeout=args.timeout)


def _grpc_errors(fn):
    def wrapper(args, argv=None):
        try:
            return fn(args, argv)
        except grpc.RpcError as exc:
            print(f"simclr: server answered {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1

    return wrapper


# -- search -----------------------------------------------------------------------------------------
def search_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="reverse image search: nearest stored images", add_help=add_help
    )
    p.add_argument("image", nargs="?", help="query image file")
    p.add_argument("--id", help="query by a stored item's id instead ('more like this')")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--collection", default="")
    p.add_argument("--filter", help="metadata equality filter FIELD=VALUE")
    _connection(p)
    return p


@_grpc_errors
def search_main(args, argv=None) -> int:
    if bool(args.image) == bool(args.id):
        raise ValueError("give a query image or --id, not both")
    flt = None
    if args.filter:
        field, _, value = args.filter.partition("=")
        flt = (
            field,
            json.loads(value)
            if value[:1] in "-0123456789tf" and value not in {"t", "f"}
            else value,
        )
    with _client(args) as client:
        image = Path(args.image).read_bytes() if args.image else None
        hits = client.search(
            image=image, id=args.id, k=args.k, collection=args.collection, filter=flt
        )
    for rank, hit in enumerate(hits, 1):
        print(f"{rank:3d}  {hit.score:8.4f}  {hit.id}  {hit.uri}")
    return 0


# -- embed ------------------------------------------------------------------------------------------
def embed_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="print embeddings of images as JSON lines", add_help=add_help
    )
    p.add_argument("images", nargs="+")
    _connection(p)
    return p


EMBED_CHUNK = 32  # images per request on the stream


@_grpc_errors
def embed_main(args, argv=None) -> int:
    """Any number of images: requests of ``EMBED_CHUNK`` on one ``EmbedStream`` call, files read as
    the stream goes and lines printed as answers come."""
    missing = [p for p in args.images if not Path(p).is_file()]
    if missing:
        print(f"simclr: no such file: {', '.join(missing[:5])}", file=sys.stderr)
        return 2
    chunks = [args.images[i : i + EMBED_CHUNK] for i in range(0, len(args.images), EMBED_CHUNK)]
    requests = ([Path(p).read_bytes() for p in chunk] for chunk in chunks)
    with _client(args) as client:
        for chunk, vectors in zip(chunks, client.embed_stream(requests), strict=True):
            for path, vector in zip(chunk, vectors, strict=True):
                print(
                    json.dumps({"image": path, "embedding": [round(float(v), 6) for v in vector]})
                )
    return 0


# -- denoise ----------------------------------------------------------------------------------------
def denoise_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="denoise an image through the server", add_help=add_help
    )
    p.add_argument("input")
    p.add_argument("output", help="PNG file to write")
    p.add_argument(
        "--sigma", type=float, default=0.0, help="noise level on the 0-255 scale, 0: blind"
    )
    _connection(p)
    return p


@_grpc_errors
def denoise_main(args, argv=None) -> int:
    with _client(args) as client:
        Path(args.output).write_bytes(client.denoise(Path(args.input).read_bytes(), args.sigma))
    print(f"wrote {args.output}")
    return 0


# -- index ------------------------------------------------------------------------------------------
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
    _connection(p)
    return p


@_grpc_errors
def index_main(args, argv=None) -> int:
    from serving.indexer import bulk_config, index_local, index_remote

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
