"""Client-side commands: ``simclr search``, ``simclr embed``, ``simclr denoise``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc

from simclr_search.settings import add_arguments, from_args, setting

ENV_PREFIX = "SIMCLR_"


@dataclass
class Connection:
    """How the client commands reach a server."""

    server: str = setting(
        "127.0.0.1:50051", "host:port of a running 'simclr serve'", env="ADDRESS", group="server"
    )
    token: str = setting(
        "",
        "bearer token, if the server requires one (the variable keeps it out of ps)",
        group="server",
    )
    timeout: float = setting(60.0, "seconds per call", env="", group="server")

    def client(self):
        from simclr_search.serving.client.grpc_client import Client

        return Client(self.server, token=self.token or None, timeout=self.timeout)


def add_connection_arguments(p: argparse.ArgumentParser) -> None:
    add_arguments(p, Connection, ENV_PREFIX)


def _client(args):
    return from_args(Connection, args).client()


def grpc_errors(fn):
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
    p.add_argument("-k", type=int, default=10, help="hits to return [default: 10]")
    p.add_argument("--collection", default="", help="collection to search (default: the server's)")
    p.add_argument("--filter", help="metadata equality filter FIELD=VALUE")
    add_connection_arguments(p)
    return p


@grpc_errors
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
    add_connection_arguments(p)
    return p


EMBED_CHUNK = 32  # images per request on the stream


@grpc_errors
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
    add_connection_arguments(p)
    return p


@grpc_errors
def denoise_main(args, argv=None) -> int:
    with _client(args) as client:
        Path(args.output).write_bytes(client.denoise(Path(args.input).read_bytes(), args.sigma))
    print(f"wrote {args.output}")
    return 0
