"""Dynamic micro-batching: concurrent requests share one ONNX Runtime call.

Requests put their rows on a thread-safe queue and await a future. Each worker is a thread of its own
that takes the first waiting request, keeps collecting until ``max_batch`` rows or ``max_wait_ms``
have passed, runs the model (ONNX Runtime releases the GIL), and hands the answers back to the event
loop in one callback. A request whose caller went away (deadline, cancellation) is dropped before
inference. Why batch: the encoder does several times more images/s at batch 32 than at batch 1
(``benchmarks/bench_export.py``).

Why the workers are threads, not tasks on the event loop: a task must wait for the loop to run it
again before it can start the next batch, and under load the loop is busy with every call's
messages, so the encoder would sit idle between batches. A thread starts the next batch the moment
the model returns.

Lanes, for a backlog: when more than ``max_batch`` rows are waiting, a worker takes up to
``max_batch`` per lane (without waiting for more) and runs them split evenly over single-threaded
copies of the model side by side, one per core, instead of one call of the multi-threaded model.
Why: on a CPU shared with the event loop (which decodes every request's images), a multi-threaded
run waits at every operator's barrier for whichever of its threads the loop preempted; independent
lanes lose only the preempted lane's time. A batch that fits in one call, and a lone image above
all, still gets the multi-threaded model (lowest latency). ``benchmarks/bench_service.py`` measures
both against in-process inference.

Waiting for company only pays when there is company: a worker waits only if its previous batch held
more than one request. A lone caller at low load is served at once (no ``max_wait_ms`` added to its
latency), while under concurrent load the wait fills batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    rows: np.ndarray
    future: asyncio.Future


_STOP = None  # put once per worker by stop()


class MicroBatcher:
    """Batch ``fn`` over concurrent calls: ``await batcher(rows (n, ...)) -> outputs (n, ...)``.

    Args:
        fn: the model: ``(B, ...) -> (B, ...)``; called from the worker threads.
        max_batch: most rows per call of ``fn``.
        max_wait_ms: how long the first request of a batch waits for company.
        on_batch: optional ``on_batch(rows, seconds)`` after each model call (metrics), called in
            the worker thread: the batch's row count and the seconds ``fn`` took.
        workers: model calls that may run at once (one thread each).
        lanes: optional single-threaded copies of ``fn`` (two or more) for a backlog: more than
            ``max_batch`` rows waiting are taken together and split evenly over them, run side by
            side. Empty or one: no lanes.
    """

    def __init__(
        self,
        fn: Callable[[np.ndarray], np.ndarray],
        max_batch: int = 32,
        max_wait_ms: float = 2.0,
        on_batch: Callable[[int, float], None] | None = None,
        workers: int = 1,
        lanes: Sequence[Callable[[np.ndarray], np.ndarray]] = (),
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if workers < 1:
            raise ValueError("workers must be >= 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.on_batch = on_batch
        self.workers = workers
        self.lanes = list(lanes) if len(lanes) > 1 else []
        # The first lane runs in the worker's own thread, the others here.
        self._lane_pool = (
            ThreadPoolExecutor(len(self.lanes) - 1, thread_name_prefix="onnxruntime-lane")
            if self.lanes
            else None
        )
        # queue.Queue, not SimpleQueue: SimpleQueue.get(timeout=...) can block past its deadline
        # until the next put when another worker takes the item that woke it (CPython's
        # _queuemodule.c recomputes a negative timeout, which means "forever"); with two workers
        # and no further requests, a batch then waited for ever (seen in bench_service.py).
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # the callers', set by start()
        self._closed = False

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        """Start the workers; call from the event loop whose coroutines will await the batcher."""
        self._loop = asyncio.get_running_loop()
        self._threads = [
            threading.Thread(target=self._run, name=f"onnxruntime-{i}", daemon=True)
            for i in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()

    async def stop(self) -> None:
        """Answer what is queued, then end the workers."""
        self._closed = True  # nothing queued after the stop sentinels: it would wait forever
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            await asyncio.get_running_loop().run_in_executor(None, thread.join)
        self._threads = []
        if self._lane_pool is not None:
            self._lane_pool.shutdown(wait=False)  # the workers have ended: no lane is running

    async def __call__(self, rows: np.ndarray) -> np.ndarray:
        if self._closed:
            raise RuntimeError("batcher stopped")
        if self._loop is None:
            raise RuntimeError("batcher not started")
        if len(rows) == 0:
            return np.empty((0,), dtype=np.float32)
        future = self._loop.create_future()
        self._queue.put(_Pending(rows, future))  # unbounded: never blocks
        return await future

    # -- the worker threads -----------------------------------------------------------------------
    def _collect(self, first: _Pending, wait: bool) -> tuple[list[_Pending], bool]:
        """``first`` and the requests that join it; whether a stop sentinel was taken meanwhile."""
        batch, size = [first], len(first.rows)
        deadline = time.monotonic() + (self.max_wait if wait else 0.0)
        most = self.max_batch * max(1, len(self.lanes))  # past max_batch: only what is waiting
        while size < most:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                if size >= self.max_batch:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is _STOP:
                return batch, True
            batch.append(item)
            size += len(item.rows)
        return batch, False

    def _run(self) -> None:
        had_company = True  # until a batch shows otherwise
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                return
            # Wait for company if the last batch had some or some is already queued.
            batch, stopping = self._collect(first, had_company or not self._queue.empty())
            had_company = len(batch) > 1
            live = [p for p in batch if not p.future.done()]  # cancelled callers are skipped
            if not live:
                continue
            try:
                out, seconds = self._infer(np.concatenate([p.rows for p in live]))
            except Exception as exc:  # give every caller the model's error
                self._answer(live, exc)
                continue
            self._answer(live, out)
            if self.on_batch is not None:  # after the answers: bookkeeping never delays them
                try:
                    self.on_batch(len(out), seconds)
                except Exception:  # a metrics failure must not end the worker (callers would hang)
                    log.exception("on_batch failed")

    def _infer(self, rows: np.ndarray) -> tuple[np.ndarray, float]:
        """The outputs for ``rows`` and the seconds the model took: on the lanes if there are
        more rows than one call takes, else with ``fn``."""
        started = time.perf_counter()
        if not self.lanes or len(rows) <= self.max_batch:
            return self._chunked(self.fn, rows), time.perf_counter() - started
        share = -(-len(rows) // len(self.lanes))  # ceil: the last lane may get fewer rows, or none
        parts = [rows[i : i + share] for i in range(0, len(rows), share)]
        others = [
            self._lane_pool.submit(self._chunked, lane, part)
            for lane, part in zip(self.lanes[1:], parts[1:], strict=False)
        ]
        try:
            first = self._chunked(self.lanes[0], parts[0])
        except Exception:
            wait(others)  # answer only when no lane still runs
            raise
        outs = [first, *(future.result() for future in others)]
        return np.concatenate(outs), time.perf_counter() - started

    def _chunked(self, fn: Callable[[np.ndarray], np.ndarray], rows: np.ndarray) -> np.ndarray:
        """One request may be larger than ``max_batch``: run it in model-sized chunks."""
        parts = [fn(rows[i : i + self.max_batch]) for i in range(0, len(rows), self.max_batch)]
        return np.concatenate(parts)

    def _answer(self, batch: list[_Pending], out: np.ndarray | Exception) -> None:
        """Resolve each request's future with its slice of ``out`` (or the error) on the callers'
        loop: one callback per batch, not one per request."""
        answers: list[tuple[asyncio.Future, object]] = []
        start = 0
        for p in batch:
            end = start + len(p.rows)
            answers.append((p.future, out if isinstance(out, Exception) else out[start:end]))
            start = end
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
            self._loop.call_soon_threadsafe(_resolve, answers)


def _resolve(answers: list[tuple[asyncio.Future, object]]) -> None:
    for future, value in answers:
        if future.done():  # the caller gave up meanwhile
            continue
        if isinstance(value, Exception):
            future.set_exception(value)
        else:
            future.set_result(value)
