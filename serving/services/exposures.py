"""The exposure log writer: what was served, appended to the online store off the request path.

Served lists are queued in memory and written by one background thread in batches
(`OnlineStore.log_exposures`: one transaction or pipeline per batch), every `flush_interval_s`
or as soon as `max_batch` are waiting. The GET path thus costs a deque append instead of a store
write. Trade-off: a crash loses at most the last interval's exposures (they only improve training
negatives), and when the store is down the queue keeps at most `max_pending` entries, dropping the
oldest (counted in `newsrec_exposures_dropped_total`). `close()` flushes what is queued.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence
from datetime import datetime

from prometheus_client import Counter

from newsrec_assets.resources.online_store import OnlineStore, StoreError
from serving.core.metrics import Metrics

logger = logging.getLogger(__name__)

ExposureEntry = tuple[str, Sequence[str], datetime, str]  # user_id, article_ids, served_at, request_id


class ExposureLogger:
    """Batches exposures and writes them from a background thread (started on first use)."""

    def __init__(
        self,
        store: OnlineStore,
        metrics: Metrics,
        flush_interval_s: float = 0.2,
        max_batch: int = 500,
        max_pending: int = 100_000,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.flush_interval_s = flush_interval_s
        self.max_batch = max_batch
        self._pending: deque[ExposureEntry] = deque(maxlen=max_pending)
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._flush_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._dropped = Counter(
            "newsrec_exposures_dropped_total",
            "Exposures dropped because the queue was full while the store could not take them.",
            registry=metrics.registry,
        )

    def append(self, user_id: str, article_ids: Sequence[str], served_at: datetime, request_id: str) -> None:
        """Queue one exposure (cheap, thread-safe)."""
        if len(self._pending) == self._pending.maxlen:
            self._dropped.inc()
        self._pending.append((user_id, list(article_ids), served_at, request_id))
        if self._thread is None:
            self._start()
        if len(self._pending) >= self.max_batch:
            self._wake.set()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._stopped.is_set():
                self._thread = threading.Thread(target=self._run, name="exposure-log", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            self.flush()

    def flush(self) -> int:
        """Write everything queued now; returns the number written. Keeps entries on store errors."""
        written = 0
        with self._flush_lock:
            while self._pending:
                batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
                try:
                    with self.metrics.store_call("log_exposures"):
                        written += self.store.log_exposures(batch)
                except StoreError:
                    logger.warning("could not write %d exposures; will retry", len(batch), exc_info=True)
                    self._pending.extendleft(reversed(batch))
                    break
        return written

    def close(self) -> None:
        """Stop the thread and flush what is queued."""
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()
