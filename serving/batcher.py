"""Dynamic micro-batching: concurrent requests share one ONNX Runtime call.

Requests put their rows on a queue and await a future. One worker takes the first waiting request,
then keeps collecting until ``max_batch`` rows or ``max_wait_ms`` have passed, runs the model once in
a thread (ONNX Runtime releases the GIL), and resolves every future with its slice. A request whose
caller went away (deadline, cancellation) is dropped before inference. Why: at batch 32 the encoder
does 2-3x more images/s than at batch 1 on the CPU (``benchmarks/bench_export.py``).

Waiting for company only pays when there is company: a worker waits only if its previous batch held
more than one request. A lone caller at low load is served at once (no ``max_wait_ms`` added to its
latency), while under concurrent load the wait fills batches (``benchmarks/bench_service.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

POLL_SECONDS = 0.0005


@dataclass
class _Pending:
    rows: np.ndarray
    future: asyncio.Future


class MicroBatcher:
    """Batch ``fn`` over concurrent calls: ``await batcher(rows (n, ...)) -> outputs (n, ...)``.

    Args:
        fn: the model: ``(B, ...) -> (B, ...)``; called from the worker threads.
        max_batch: most rows per call of ``fn``.
        max_wait_ms: how long the first request of a batch waits for company.
        on_batch: optional ``on_batch(rows, seconds)`` after each model call (metrics): the
            batch's row count and the seconds ``fn`` took, timed in the worker thread.
    """

    def __init__(
        self,
        fn: Callable[[np.ndarray], np.ndarray],
        max_batch: int = 32,
        max_wait_ms: float = 2.0,
        on_batch: Callable[[int, float], None] | None = None,
        workers: int = 1,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Pending] | None = None
        self.workers = workers
        self._tasks: list[asyncio.Task] = []
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="onnxruntime")

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def start(self) -> None:
        self._queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run()) for _ in range(self.workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._executor.shutdown(wait=True)

    async def __call__(self, rows: np.ndarray) -> np.ndarray:
        if self._queue is None:
            raise RuntimeError("batcher not started")
        if len(rows) == 0:
            return np.empty((0,), dtype=np.float32)
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(rows, future))  # unbounded: never blocks
        return await future

    def _drain(self, batch: list[_Pending], size: int) -> int:
        """Move waiting requests into ``batch`` until it is full; returns the new row count."""
        assert self._queue is not None
        while size < self.max_batch and not self._queue.empty():
            item = self._queue.get_nowait()
            batch.append(item)
            size += len(item.rows)
        return size

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        had_company = True  # until a batch shows otherwise
        while True:
            first = await self._queue.get()
            batch = [first]
            size = self._drain(batch, len(first.rows))
            # Wait for company in short slices (no task per queued item: that costs more than a
            # small request's own work), and stop as soon as the batch is full.
            deadline = time.monotonic() + (self.max_wait if had_company or len(batch) > 1 else 0)
            while size < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                await asyncio.sleep(min(remaining, POLL_SECONDS))
                size = self._drain(batch, size)
            had_company = len(batch) > 1
            live = [p for p in batch if not p.future.done()]  # cancelled callers are skipped
            if not live:
                continue
            rows = np.concatenate([p.rows for p in live])
            try:
                out, seconds = await loop.run_in_executor(self._executor, self._chunked, rows)
            except Exception as exc:  # give every caller the model's error
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            start = 0
            for p in live:
                end = start + len(p.rows)
                if not p.future.done():
                    p.future.set_result(out[start:end])
                start = end
            if self.on_batch is not None:  # after the answers: bookkeeping never delays them
                self.on_batch(len(rows), seconds)

    def _chunked(self, rows: np.ndarray) -> tuple[np.ndarray, float]:
        """One request may be larger than ``max_batch``: run it in model-sized chunks. Returns
        the outputs and the seconds the model took."""
        started = time.perf_counter()
        parts = [self.fn(rows[i : i + self.max_batch]) for i in range(0, len(rows), self.max_batch)]
        return np.concatenate(parts), time.perf_counter() - started
