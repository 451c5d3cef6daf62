"""The micro-batcher's lanes: a backlog is split over single-threaded model copies run side by side,
while a batch that fits in one call still goes to the (multi-threaded) model."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from simclr_search.serving.core.batcher import MicroBatcher


class Recorder:
    """Model functions that note who ran which rows, and how many ran at once."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[tuple[str, int]] = []  # (function name, rows)
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def model(self, name: str, fail_on: float | None = None):
        def fn(rows: np.ndarray) -> np.ndarray:
            with self._lock:
                self.calls.append((name, len(rows)))
                self.running += 1
                self.most_at_once = max(self.most_at_once, self.running)
            try:
                if fail_on is not None and (rows == fail_on).any():
                    raise ValueError(f"{name} cannot take {fail_on}")  # at once
                time.sleep(self.delay)
                return rows * 10
            finally:
                with self._lock:
                    self.running -= 1

        return fn


class Held:
    """Wraps a model so that its first call waits until ``release()``: requests sent meanwhile
    pile up in the batcher's queue."""

    def __init__(self, model) -> None:
        self.model = model
        self.entered = threading.Event()
        self._release = threading.Event()

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        self.entered.set()
        self._release.wait(5)
        return self.model(rows)

    async def backlog(self, batcher: MicroBatcher, requests: list[np.ndarray]) -> list:
        """The first request enters the model, the others queue behind it; every answer (or
        error) once the model is let go."""
        calls = [asyncio.ensure_future(batcher(requests[0]))]
        await asyncio.get_running_loop().run_in_executor(None, self.entered.wait, 5)
        calls += [asyncio.ensure_future(batcher(r)) for r in requests[1:]]
        await asyncio.sleep(0.05)
        self._release.set()
        return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)


def test_a_backlog_is_split_over_the_lanes_side_by_side_and_answers_stay_in_order() -> None:
    rec = Recorder(delay=0.05)
    held = Held(rec.model("fn"))
    lanes = [rec.model("lane0"), rec.model("lane1")]

    async def main() -> list:
        batcher = MicroBatcher(held, max_batch=4, max_wait_ms=0.0, lanes=lanes)
        batcher.start()
        try:
            # The first request occupies the held model; the other six (18 rows) wait.
            requests = [np.full((1 if i == 0 else 3, 2), i, np.float32) for i in range(7)]
            answers = await held.backlog(batcher, requests)
        finally:
            await batcher.stop()
        for request, answer in zip(requests, answers, strict=True):
            np.testing.assert_array_equal(answer, request * 10)
        return answers

    asyncio.run(main())
    assert rec.calls[0] == ("fn", 1)
    lane_rows = [rows for name, rows in rec.calls if name.startswith("lane")]
    # The worker takes whole requests until it holds two lanes x max_batch 4 = 8 rows: three
    # requests, 9 rows, split 5 + 4, the 5 run as 4 + 1; then the other three the same way.
    assert sorted(lane_rows) == [1, 1, 4, 4, 4, 4], rec.calls
    assert sum(lane_rows) == 18 and {"lane0", "lane1"} <= {name for name, _ in rec.calls}
    assert rec.most_at_once == 2  # the lanes ran side by side


def test_a_batch_that_fits_in_one_call_goes_to_the_model_not_the_lanes() -> None:
    rec = Recorder()

    async def main() -> None:
        batcher = MicroBatcher(
            rec.model("fn"),
            max_batch=4,
            max_wait_ms=0.0,
            lanes=[rec.model("lane0"), rec.model("lane1")],
        )
        batcher.start()
        try:
            for i in range(5):  # one at a time: never a backlog
                answer = await batcher(np.full((1 + i % 4, 2), i, np.float32))
                np.testing.assert_array_equal(answer, np.full((1 + i % 4, 2), 10 * i))
        finally:
            await batcher.stop()

    asyncio.run(main())
    assert {name for name, _ in rec.calls} == {"fn"}


def test_one_request_larger_than_all_lanes_take_is_split_and_chunked() -> None:
    rec = Recorder()

    async def main() -> None:
        batcher = MicroBatcher(
            rec.model("fn"), max_batch=4, lanes=[rec.model("lane0"), rec.model("lane1")]
        )
        batcher.start()
        try:
            rows = np.arange(40, dtype=np.float32).reshape(20, 2)
            np.testing.assert_array_equal(await batcher(rows), rows * 10)
        finally:
            await batcher.stop()

    asyncio.run(main())
    assert sorted(rec.calls) == sorted(
        [("lane0", 4)] * 2 + [("lane0", 2)] + [("lane1", 4)] * 2 + [("lane1", 2)]
    )


def test_a_lane_error_reaches_the_callers_of_its_batch_after_every_lane_is_done() -> None:
    rec = Recorder(delay=0.05)
    held = Held(rec.model("fn"))
    # lane0 fails at once on the first part; lane1 is still running its part then.
    lanes = [rec.model("lane0", fail_on=1.0), rec.model("lane1")]

    async def main() -> None:
        batcher = MicroBatcher(held, max_batch=2, max_wait_ms=0.0, lanes=lanes)
        batcher.start()
        try:
            requests = [np.full((1, 2), i, np.float32) for i in range(5)]
            answers = await held.backlog(batcher, requests)
            np.testing.assert_array_equal(answers[0], requests[0] * 10)
            assert all(isinstance(a, ValueError) for a in answers[1:]), answers
            assert rec.running == 0  # no lane was still running when the callers heard
            # The worker goes on.
            np.testing.assert_array_equal(await batcher(np.full((1, 2), 7, np.float32)), 70)
        finally:
            await batcher.stop()

    asyncio.run(main())


@pytest.mark.parametrize("lanes", [0, 1])
def test_fewer_than_two_lanes_means_none(lanes: int) -> None:
    rec = Recorder()
    batcher = MicroBatcher(rec.model("fn"), lanes=[rec.model("lane")] * lanes)
    assert batcher.lanes == []
