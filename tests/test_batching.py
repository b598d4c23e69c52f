"""The window batcher behind exposures and events: one flush per window, bounded and never
blocking for fire-and-forget items, acknowledged only after the flush for submitted ones."""

from __future__ import annotations

import asyncio
import threading

import pytest

from serving.services.batching import WindowBatcher


class Recorder:
    """A flush that records its batches and can be held or made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.started, self.release = threading.Event(), threading.Event()
        self.release.set()
        self.fail: Exception | None = None

    def __call__(self, items: list[int]) -> list[str]:
        self.started.set()
        assert self.release.wait(30)
        if self.fail is not None:
            raise self.fail
        self.batches.append(items)
        return [f"landed {item}" for item in items]


def run(scenario):
    return asyncio.run(asyncio.wait_for(scenario(), timeout=60))


def test_items_of_one_window_land_in_one_flush():
    flush, dropped = Recorder(), []

    async def scenario() -> None:
        batcher = WindowBatcher(flush, window_s=0.2, max_pending=100, on_drop=dropped.append)
        batcher.start()
        for item in range(10):
            assert batcher.offer(item)
        results = await asyncio.gather(*(batcher.submit(item) for item in (10, 11)))
        assert results == ["landed 10", "landed 11"]
        await batcher.close()

    run(scenario)
    assert flush.batches == [list(range(12))] and dropped == []


def test_a_full_queue_drops_and_counts_and_offering_never_waits_for_the_flush():
    flush, dropped = Recorder(), []

    async def scenario() -> None:
        batcher = WindowBatcher(flush, window_s=0, max_pending=3, on_drop=dropped.append)
        batcher.start()
        flush.release.clear()  # the landing zone hangs
        assert batcher.offer(0)
        await asyncio.to_thread(flush.started.wait, 30)  # item 0 is being written, and held
        accepted = [batcher.offer(item) for item in range(1, 6)]  # while the write hangs
        assert accepted == [True, True, True, False, False]
        flush.release.set()
        await batcher.close()

    run(scenario)
    assert sum(dropped) == 2
    assert sorted(item for batch in flush.batches for item in batch) == [0, 1, 2, 3]


def test_a_failed_flush_fails_its_submitters_and_retries_its_offered_items():
    flush, dropped = Recorder(), []

    async def scenario() -> None:
        batcher = WindowBatcher(flush, window_s=0.05, max_pending=100, on_drop=dropped.append)
        batcher.start()
        flush.fail = OSError("bucket unreachable")
        batcher.offer(1)
        with pytest.raises(OSError, match="bucket unreachable"):
            await batcher.submit(2)  # not acknowledged: it was not written
        flush.fail = None
        assert await batcher.submit(3) == "landed 3"
        await batcher.close()

    run(scenario)
    assert sorted(item for batch in flush.batches for item in batch) == [1, 3]  # 2 was refused
    assert dropped == []


def test_closing_lands_what_waits_at_once():
    flush = Recorder()

    async def scenario() -> None:
        batcher = WindowBatcher(flush, window_s=3600, max_pending=100, on_drop=lambda n: None)
        batcher.start()
        batcher.offer(7)
        await batcher.close()  # does not wait for the hour-long window

    run(scenario)
    assert flush.batches == [[7]]
