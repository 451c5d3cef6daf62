"""Search latency over HTTP/JSON beside gRPC, in one run, on one server.

A real server (the shipped bundle, a fresh store) indexes CIFAR-10 test images; one client then
sends the same queries by each protocol, alternating, one at a time: Search by vector (k 10; the
vector as a JSON array of floats over HTTP) and Search by image (a CIFAR-10 JPEG, base64 in JSON
over HTTP, copy detection on). Reported: p50 / p99 milliseconds per protocol and query kind, and
the HTTP/gRPC ratio of the medians. HTTP runs through Python's ``http.client`` on one kept-alive
connection, as a service would.

    python benchmarks/bench_http.py [--quick]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_copy_detection import Server
from benchmarks.common import emit
from benchmarks.copy_data import cifar_images

ROOT = Path(__file__).resolve().parents[1]


def _http_search(connection: http.client.HTTPConnection, body: dict) -> list:
    connection.request(
        "POST",
        "/simclr.v1.ImageSearch/Search",
        json.dumps(body),
        {"Content-Type": "application/json"},
    )
    response = connection.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
    return json.loads(data)["hits"]


def _ms(values: list[float]) -> dict:
    return {
        "p50": round(1000 * float(np.percentile(values, 50)), 2),
        "p99": round(1000 * float(np.percentile(values, 99)), 2),
    }


def main(args: argparse.Namespace) -> dict:
    from simclr_search.serving.client import Client

    library = cifar_images("test", 1000 if args.quick else 5000, 31)
    queries = list(library.values())[: 100 if args.quick else 400]
    with tempfile.TemporaryDirectory(prefix="simclr-http-bench-") as tmp:
        server = Server(args.bundle, Path(tmp) / "store")
        try:
            with Client(f"127.0.0.1:{server.running.port}") as client:
                list(client.index_images([(n, d, n, {}) for n, d in library.items()]))
                vectors = client.embed(queries[:64])
                connection = http.client.HTTPConnection("127.0.0.1", server.running.http_port)
                times: dict[str, list[float]] = {}
                for i, image in enumerate(queries):
                    vector = vectors[i % len(vectors)]
                    for name, call in (
                        ("grpc_vector", lambda v=vector: client.search(vector=v, k=10)),
                        (
                            "http_vector",
                            lambda v=vector: _http_search(
                                connection, {"vector": {"values": v.tolist()}, "k": 10}
                            ),
                        ),
                        ("grpc_image", lambda d=image: client.search(image=d, k=10)),
                        (
                            "http_image",
                            lambda d=image: _http_search(
                                connection,
                                {"image": {"data": base64.b64encode(d).decode()}, "k": 10},
                            ),
                        ),
                    ):
                        tick = time.perf_counter()
                        hits = call()
                        times.setdefault(name, []).append(time.perf_counter() - tick)
                        assert len(hits) == 10
                connection.close()
        finally:
            server.stop()
    result = {name: _ms(values) for name, values in times.items()}
    result["queries"] = len(queries)
    result["indexed"] = len(library)
    for kind in ("vector", "image"):
        result[f"http_over_grpc_p50_{kind}"] = round(
            result[f"http_{kind}"]["p50"] / result[f"grpc_{kind}"]["p50"], 2
        )
    return result


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", type=Path, default=ROOT / "models" / "compact-cifar10")
    p.add_argument("--quick", action="store_true")
    return p


if __name__ == "__main__":
    emit(main(get_args_parser().parse_args()))
