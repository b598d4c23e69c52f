"""One landing object per short window: the batcher behind exposures and `POST /v1/events`.

A task of the app's event loop waits `window_s` after the first queued item, then hands the whole
window to `flush` in a worker thread (a landing write blocks); the next window collects meanwhile
(group commit). `offer` (exposures) never waits: past `max_pending` the item is dropped and
counted, and a failed flush puts its items back while there is room. `submit` (events) returns its
item's result once its window is written, or raises the flush's error: nothing unwritten is
acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class WindowBatcher(Generic[T]):
    """Batches items per window; `flush(items)` returns one result per item (see the module doc)."""

    def __init__(
        self,
        flush: Callable[[list[T]], Sequence[Any]],
        window_s: float,
        max_pending: int,
        on_drop: Callable[[int], None],
        prepare: Callable[[Any], T] | None = None,
    ) -> None:
        self.flush, self.window_s, self.max_pending, self.on_drop = flush, window_s, max_pending, on_drop
        self.prepare = prepare  # applied by `offer` on the event loop, e.g. rendering what lands
        self._pending: list[tuple[T, asyncio.Future[Any] | None]] = []
        self._wake, self._stop = asyncio.Event(), asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        """Start the flushing task on the running event loop (the app's lifespan)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="window-batcher")

    def offer(self, item: Any) -> bool:
        """Queue an item (`prepare`d, if given) without waiting for it to land; False if dropped."""
        if len(self._pending) >= self.max_pending or self._closing:
            self.on_drop(1)
            return False
        self._pending.append((item if self.prepare is None else self.prepare(item), None))
        self._wake.set()
        return True

    async def submit(self, item: T) -> Any:
        """Queue an item and return its result once its window has landed (or raise why not)."""
        if self._closing:
            raise RuntimeError("the batcher is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._wake.set()
        return await future

    async def close(self) -> None:
        """Flush what waits and stop."""
        self._closing = True
        self._wake.set()
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            with suppress(TimeoutError):  # the window: whatever arrives joins this flush
                await asyncio.wait_for(self._stop.wait(), self.window_s)
            batch, self._pending = self._pending, []
            self._wake.clear()
            if batch:
                await self._flush(batch)
            if self._closing and not self._pending:
                return

    async def _flush(self, batch: list[tuple[T, asyncio.Future[Any] | None]]) -> None:
        try:
            results = await asyncio.to_thread(self.flush, [item for item, _ in batch])
        except Exception as error:
            logger.warning("landing %d items failed: %s", len(batch), error, exc_info=True)
            unacknowledged = [(item, None) for item, future in batch if future is None]
            room = 0 if self._closing else max(0, self.max_pending - len(self._pending))
            self._pending[:0] = unacknowledged[:room]  # retried with the next window
            if len(unacknowledged) > room:
                self.on_drop(len(unacknowledged) - room)
            if room and unacknowledged:
                self._wake.set()
            for _, future in batch:
                if future is not None and not future.done():
                    future.set_exception(error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future is not None and not future.done():
                future.set_result(result)
