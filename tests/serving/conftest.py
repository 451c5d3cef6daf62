"""A real gRPC server on a loopback port, run in a background event loop, for tests to call."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from simclr_search.serving.core.service import ServiceConfig
from simclr_search.serving.server.app import RunningServer, start_server
from simclr_search.serving.server.settings import ServerOptions


class ServerThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 120):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def loop_thread() -> Iterator[ServerThread]:
    thread = ServerThread()
    yield thread
    thread.close()


def make_config(bundle: Path, store: Path, **overrides) -> ServiceConfig:
    values = dict(
        bundle=bundle, store=store, max_batch=16, max_wait_ms=2.0, decode_threads=2, ort_threads=1
    )
    values.update(overrides)
    return ServiceConfig(**values)


@pytest.fixture
def server(
    tiny_bundle, tmp_path: Path, loop_thread: ServerThread
) -> Iterator[tuple[RunningServer, str]]:
    bundle, _ = tiny_bundle
    running = loop_thread.run(
        start_server(
            make_config(bundle, tmp_path / "store"),
            ServerOptions(address="127.0.0.1:0", metrics_port=0, http_port=0),
        )
    )
    yield running, f"127.0.0.1:{running.port}"
    loop_thread.run(running.stop())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item (``rep_call``), for fixtures that keep evidence of a
    failure (the browser tests' screenshots)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
