"""What Python gRPC itself costs per message on this machine: an echo server, no model, no decode.

Why: ``bench_service.py`` finds one image per Embed call far below in-process inference. This
separates the transport from our code: the same payload (1.5 KB, a CIFAR-sized JPEG) echoed by a
``grpc.aio`` server in its own process, as unary calls and as messages on open bidirectional
streams, with 1 and 32 concurrent clients on the same cores (as in ``bench_service.py``). CPU per
message = cores / rate at 32 clients (the cores are saturated): a floor under what any
one-image-per-request design costs.

    python benchmarks/bench_grpc_transport.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc import aio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import emit, machine

PAYLOAD = os.urandom(1500)
SERVICE = "bench.Echo"


def _same(data: bytes) -> bytes:
    return data


async def _unary(request: bytes, context) -> bytes:
    return request


async def _stream(requests, context):
    async for request in requests:
        yield request


async def serve() -> None:
    server = aio.server()
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary, _same, _same),
        "Stream": grpc.stream_stream_rpc_method_handler(_stream, _same, _same),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


async def rate(address: str, kind: str, clients: int, seconds: float) -> float:
    """Messages/s echoed with ``clients`` concurrent callers, each waiting for its answer."""
    count = 0
    stop = time.perf_counter() + seconds
    async with aio.insecure_channel(address) as channel:
        unary = channel.unary_unary(f"/{SERVICE}/Unary", _same, _same)
        stream = channel.stream_stream(f"/{SERVICE}/Stream", _same, _same)

        async def worker() -> None:
            nonlocal count
            if kind == "unary":
                while time.perf_counter() < stop:
                    await unary(PAYLOAD)
                    count += 1
                return
            call = stream()
            while time.perf_counter() < stop:
                await call.write(PAYLOAD)
                await call.read()
                count += 1
            await call.done_writing()

        tick = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return count / (time.perf_counter() - tick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve())
        return
    seconds = 2.0 if args.quick else 10.0
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        address = f"127.0.0.1:{server.stdout.readline().strip()}"
        cores = os.cpu_count() or 1
        result: dict = {"machine": machine(), "quick": args.quick, "payload_bytes": len(PAYLOAD)}
        for kind in ("unary", "stream"):
            for clients in (1, 32):
                messages = asyncio.run(rate(address, kind, clients, seconds))
                result[f"{kind}_per_s_{clients}_clients"] = messages
                line = f"{kind:6} echo, {clients:2d} clients: {messages:7.0f} messages/s"
                if clients > 1:  # the cores are saturated: cores / rate is the CPU per message
                    result[f"{kind}_cpu_ms_per_message"] = 1000 * cores / messages
                    line += f", {1000 * cores / messages:.3f} ms of CPU per message (both ends)"
                print(line, flush=True)
    finally:
        server.terminate()
        server.wait(30)
    emit(result)


if __name__ == "__main__":
    main()
