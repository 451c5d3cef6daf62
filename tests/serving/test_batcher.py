"""The micro-batcher: concurrent requests share model calls; several workers run calls at once."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from simclr_search.serving.core.batcher import MicroBatcher


def test_concurrent_requests_get_their_own_rows_back_with_several_workers() -> None:
    threads: set[str] = set()
    overlap = {"now": 0, "most": 0}
    lock = threading.Lock()

    def model(rows: np.ndarray) -> np.ndarray:
        with lock:
            threads.add(threading.current_thread().name)
            overlap["now"] += 1
            overlap["most"] = max(overlap["most"], overlap["now"])
        time.sleep(0.02)  # long enough for the second worker to start a call meanwhile
        with lock:
            overlap["now"] -= 1
        return rows * 2

    async def main() -> list[np.ndarray]:
        batcher = MicroBatcher(model, max_batch=4, max_wait_ms=1.0, workers=2)
        batcher.start()
        try:
            requests = [np.full((1 + i % 3, 2), i, dtype=np.float32) for i in range(24)]
            answers = await asyncio.gather(*(batcher(r) for r in requests))
        finally:
            await batcher.stop()
        for request, answer in zip(requests, answers, strict=True):
            np.testing.assert_array_equal(answer, request * 2)
        return answers

    asyncio.run(main())
    assert len(threads) == 2 and overlap["most"] == 2


def test_batcher_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="workers"):
        MicroBatcher(lambda rows: rows, workers=0)
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(lambda rows: rows, max_batch=0)


def test_lone_requests_skip_the_wait_and_concurrent_ones_share_a_call() -> None:
    sizes: list[int] = []

    def model(rows: np.ndarray) -> np.ndarray:
        sizes.append(len(rows))
        return rows + 1

    async def main() -> tuple[float, list[np.ndarray]]:
        # A wait long enough that one paid by each lone request would show in the elapsed time.
        batcher = MicroBatcher(model, max_batch=8, max_wait_ms=300.0)
        batcher.start()
        try:
            await batcher(np.zeros((1, 2), np.float32))  # the first may wait: no history yet
            tick = time.perf_counter()
            for _ in range(5):
                await batcher(np.zeros((1, 2), np.float32))
            lone = time.perf_counter() - tick
            answers = await asyncio.gather(
                *(batcher(np.full((1, 2), i, np.float32)) for i in range(8))
            )
        finally:
            await batcher.stop()
        return lone, answers

    lone, answers = asyncio.run(main())
    assert lone < 0.3, f"five lone requests took {lone:.3f} s: each waited for company"
    assert sizes[:6] == [1] * 6
    assert sum(sizes[6:]) == 8 and len(sizes) < 6 + 8  # the concurrent eight shared calls
    for i, answer in enumerate(answers):
        np.testing.assert_array_equal(answer, np.full((1, 2), i + 1, np.float32))


def test_on_batch_reports_each_calls_rows_and_model_seconds() -> None:
    """The server's batch-size histogram and encoder busy-time counter come from this callback."""
    reported: list[tuple[int, float]] = []

    def model(rows: np.ndarray) -> np.ndarray:
        time.sleep(0.05)
        return rows

    async def main() -> None:
        batcher = MicroBatcher(
            model, max_batch=4, max_wait_ms=1.0, on_batch=lambda n, s: reported.append((n, s))
        )
        batcher.start()
        try:
            await batcher(np.zeros((3, 2), np.float32))
            # Over max_batch: two model calls, one report with both calls' time.
            await batcher(np.zeros((6, 2), np.float32))
        finally:
            await batcher.stop()

    asyncio.run(main())
    assert [n for n, _ in reported] == [3, 6]
    first, second = (s for _, s in reported)
    assert 0.05 <= first < 5 and 0.1 <= second < 5, reported  # one model call, then two


def test_stop_answers_what_is_queued_then_refuses_new_calls() -> None:
    """Graceful shutdown: requests already queued get their answers, later ones a clear error."""
    release = threading.Event()

    def model(rows: np.ndarray) -> np.ndarray:
        release.wait(5)
        return rows * 3

    async def main() -> None:
        batcher = MicroBatcher(model, max_batch=2, max_wait_ms=0.0)
        batcher.start()
        calls = [asyncio.ensure_future(batcher(np.full((1, 2), i, np.float32))) for i in range(5)]
        await asyncio.sleep(0.05)  # all five queued; the first batch is in the model
        stopping = asyncio.ensure_future(batcher.stop())
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.wait_for(stopping, 10)
        answers = await asyncio.wait_for(asyncio.gather(*calls), 10)  # never left waiting
        for i, answer in enumerate(answers):
            np.testing.assert_array_equal(answer, np.full((1, 2), 3 * i, np.float32))
        with pytest.raises(RuntimeError, match="stopped"):
            await batcher(np.zeros((1, 2), np.float32))

    asyncio.run(main())


def test_a_model_error_reaches_every_caller_of_its_batch_and_the_worker_goes_on() -> None:
    def model(rows: np.ndarray) -> np.ndarray:
        if (rows < 0).any():
            raise ValueError("negative input")
        return rows

    async def main() -> None:
        batcher = MicroBatcher(model, max_batch=4, max_wait_ms=50.0)
        batcher.start()
        try:
            await batcher(np.zeros((1, 2), np.float32))
            results = await asyncio.gather(
                batcher(np.full((1, 2), -1, np.float32)),
                batcher(np.ones((1, 2), np.float32)),
                return_exceptions=True,
            )
            assert all(isinstance(r, ValueError) for r in results), results
            np.testing.assert_array_equal(await batcher(np.ones((1, 2), np.float32)), 1)
        finally:
            await batcher.stop()

    asyncio.run(main())


def test_a_caller_that_went_away_is_dropped_before_inference() -> None:
    seen: list[float] = []
    busy = threading.Event()
    release = threading.Event()

    def model(rows: np.ndarray) -> np.ndarray:
        seen.extend(rows[:, 0].tolist())
        busy.set()
        release.wait(5)
        return rows

    async def main() -> None:
        batcher = MicroBatcher(model, max_batch=1, max_wait_ms=0.0)
        batcher.start()
        try:
            first = asyncio.ensure_future(batcher(np.full((1, 2), 1, np.float32)))
            await asyncio.get_running_loop().run_in_executor(None, busy.wait, 5)
            gone = asyncio.ensure_future(batcher(np.full((1, 2), 2, np.float32)))
            await asyncio.sleep(0.01)
            gone.cancel()  # a deadline passed while it was queued
            await asyncio.sleep(0.01)
            release.set()
            np.testing.assert_array_equal(await first, 1)
            np.testing.assert_array_equal(await batcher(np.full((1, 2), 3, np.float32)), 3)
        finally:
            await batcher.stop()

    asyncio.run(main())
    assert seen == [1.0, 3.0]


def test_bursts_with_several_workers_are_all_answered_without_a_later_request() -> None:
    """Each burst is awaited before the next is sent, so a request that a worker holds until some
    later request arrives would never be answered. (SimpleQueue's timed get could do that, but
    only under load: this test does not reproduce that race.)"""

    async def main() -> None:
        batcher = MicroBatcher(lambda rows: rows + 1, max_batch=4, max_wait_ms=0.3, workers=3)
        batcher.start()
        try:
            for i in range(300):
                burst = [batcher(np.full((1, 2), j, np.float32)) for j in range(1 + i % 5)]
                answers = await asyncio.wait_for(asyncio.gather(*burst), 5.0)
                for j, answer in enumerate(answers):
                    np.testing.assert_array_equal(answer, np.full((1, 2), j + 1, np.float32))
        finally:
            await batcher.stop()

    asyncio.run(main())


def test_a_failing_on_batch_callback_does_not_stop_the_worker() -> None:
    def broken(rows: int, seconds: float) -> None:
        raise RuntimeError("metrics backend down")

    async def main() -> None:
        batcher = MicroBatcher(lambda rows: rows, max_batch=2, max_wait_ms=0.0, on_batch=broken)
        batcher.start()
        try:
            for i in range(3):
                answer = await asyncio.wait_for(batcher(np.full((1, 2), i, np.float32)), 5.0)
                np.testing.assert_array_equal(answer, i)
        finally:
            await batcher.stop()

    asyncio.run(main())
