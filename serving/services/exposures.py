"""The exposure log writers: what was served, appended to the online store off the request path.

A GET queues its exposure in memory (a deque append of a few hundred bytes); the store write
happens elsewhere, in batches (`OnlineStore.log_exposures`: one transaction or one script call
per batch), every `flush_interval_s`:

- `ProcessExposureLogger` (the default for a store built from settings) hands the queued lines
  to a writer process (`serving.services.exposure_writer`, started with the app) through a
  pipe, from a thread that holds the GIL only to join the lines. The store write, its row
  building and its SQLite or Redis client code run in that process, at a lower CPU priority,
  so they never hold this process's GIL while a request waits for it: measured as the largest
  source of tail latency when the writer was a thread (bench/README.md).
- `ThreadExposureLogger` writes from a thread of this process. It serves a store object handed
  to `create_app`, which cannot be reopened in another process.

Trade-offs, both writers: a crash loses at most the exposures not yet written (they only improve
training negatives); while the store is down the queue keeps at most `max_pending` entries,
dropping the oldest (counted in `newsrec_exposures_dropped_total`). `close()` writes what is
queued. A writer process that dies is restarted for the next batch; what it had received but not
yet written is lost (and logged).
"""

from __future__ import annotations

import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Protocol

import orjson
from prometheus_client import Counter

from newsrec_assets.resources.online_store import OnlineStore, StoreError
from serving.core.metrics import Metrics
from serving.services.exposure_writer import decode_exposures

logger = logging.getLogger(__name__)


class ExposureLogger(Protocol):
    def append(self, user_id: str, article_ids: Sequence[str], served_at_us: int, request_id: str) -> None:
        """Queue one exposure (cheap, thread-safe)."""

    def start(self) -> None:
        """Start writing now (at the app's startup) rather than at the first exposure."""

    def flush(self) -> int:
        """Write everything queued now; returns the number handed to the store."""

    def close(self) -> None:
        """Stop the writer after writing what is queued."""


def _dropped_counter(metrics: Metrics) -> Counter:
    return Counter(
        "newsrec_exposures_dropped_total",
        "Exposures dropped because the queue was full while the store (or the writer process) "
        "could not take them.",
        registry=metrics.registry,
    )


class _Batcher:
    """The queue and the flushing thread both writers share; `write_batch` does the writing."""

    def __init__(self, metrics: Metrics, flush_interval_s: float, max_pending: int, name: str) -> None:
        self.flush_interval_s = flush_interval_s
        self._pending: deque[bytes] = deque(maxlen=max_pending)
        self._dropped = _dropped_counter(metrics)
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._flush_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._name = name

    def append(self, user_id: str, article_ids: Sequence[str], served_at_us: int, request_id: str) -> None:
        if len(self._pending) == self._pending.maxlen:
            self._dropped.inc()
        # Rendered here, on the request path: a few hundred nanoseconds in orjson, where the
        # flushing thread would hold the GIL for a whole batch to do the same.
        self._pending.append(orjson.dumps([request_id, user_id, article_ids, served_at_us]))
        if self._thread is None:
            self._start()

    def start(self) -> None:
        self._start()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._stopped.is_set():
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            try:
                self._drain()
            except Exception:  # keep the thread alive: the next round retries
                logger.exception("exposure log flush failed")

    def _drain(self) -> int:
        """Write (or hand over) everything queued; returns how many."""
        with self._flush_lock:
            count = len(self._pending)
            if not count:
                return 0
            lines = [self._pending.popleft() for _ in range(count)]
            if not self.write_batch(lines):
                # Put them back in order; a full queue drops from the oldest end, as appends do.
                room = self._pending.maxlen - len(self._pending)
                if room < len(lines):
                    self._dropped.inc(len(lines) - room)
                self._pending.extendleft(reversed(lines[max(0, len(lines) - room) :]))
                return 0
            return count

    def write_batch(self, lines: list[bytes]) -> bool:
        """Write rendered exposures; False (after logging why) to keep `lines` for the next round
        (an implementation may first remove from `lines` what it did write)."""
        raise NotImplementedError

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


class ThreadExposureLogger(_Batcher):
    """Writes batches of exposures to `store` from a background thread of this process."""

    def __init__(
        self,
        store: OnlineStore,
        metrics: Metrics,
        flush_interval_s: float = 0.2,
        max_batch: int = 500,
        max_pending: int = 100_000,
    ) -> None:
        super().__init__(metrics, flush_interval_s, max_pending, "exposure-log")
        self.store = store
        self.max_batch = min(max_batch, store.exposures_per_call)
        self._log_exposures = metrics.store_timer("log_exposures")

    def write_batch(self, lines: list[bytes]) -> bool:
        for start in range(0, len(lines), self.max_batch):
            chunk = lines[start : start + self.max_batch]
            try:
                self._log_exposures(self.store.log_exposures, decode_exposures(chunk))
            except StoreError:
                logger.warning("could not write %d exposures; will retry", len(chunk), exc_info=True)
                del lines[:start]  # the chunks before this one are written: keep only the rest
                return False
        return True

    def flush(self) -> int:
        return self._drain()

    def close(self) -> None:
        self.stop()
        self._drain()


class ProcessExposureLogger(_Batcher):
    """Hands batches of exposures to a writer process that owns its own store connection.

    Args:
        settings_json: the API settings, from which the writer opens the same store.
        flush_interval_s: how often queued exposures are handed over.
        ack_timeout_s: how long `flush()` waits for the writer to confirm a write.
        command: the writer's command line (tests point it elsewhere).
    """

    def __init__(
        self,
        settings_json: bytes,
        metrics: Metrics,
        flush_interval_s: float = 0.1,
        max_pending: int = 100_000,
        ack_timeout_s: float = 30.0,
        command: Sequence[str] | None = None,
    ) -> None:
        super().__init__(metrics, flush_interval_s, max_pending, "exposure-pipe")
        self.settings_json = settings_json
        self.ack_timeout_s = ack_timeout_s
        self.command = list(command or [sys.executable, "-m", "serving.services.exposure_writer"])
        self._process: subprocess.Popen[bytes] | None = None
        self._replies = b""
        self._acks = 0
        self._restart_after = 0.0

    def _writer(self) -> subprocess.Popen[bytes] | None:
        """The running writer process, started (or restarted) if need be; None while backing off."""
        process = self._process
        if process is not None and process.poll() is None:
            return process
        if process is not None:
            logger.warning("exposure writer exited with %s; restarting it", process.returncode)
            self._process = None
        if time.monotonic() < self._restart_after:
            return None
        process = None
        try:
            process = subprocess.Popen(
                self.command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            assert process.stdin is not None
            os.set_blocking(process.stdin.fileno(), False)  # writes are bounded by a deadline
            self._send(process, self.settings_json + b"\n")
        except (OSError, TimeoutError):
            logger.exception("could not start the exposure writer")
            if process is not None:
                process.kill()
                process.wait()
            self._restart_after = time.monotonic() + 1.0
            return None
        self._process = process
        return process

    def start(self) -> None:
        """Start the writer process and wait until it has opened the store: its start-up (a
        Python process importing the store's client) then takes CPU before the first requests
        rather than beside them, and a writer that cannot start is logged at startup."""
        with self._flush_lock:
            started = self._writer() is not None
        super().start()
        if started:
            self.flush()  # answered once the writer has read its settings and opened the store

    def write_batch(self, lines: list[bytes]) -> bool:
        process = self._writer()
        if process is None:
            return False
        try:
            self._send(process, b"\n".join(lines) + b"\n")
        except (OSError, TimeoutError) as error:
            # Gone, or stuck (its store down for longer than the deadline): a new one takes over
            # with these lines; what the old one held is lost.
            logger.warning(
                "exposure writer failed (%s); %d exposures kept for the next one", error, len(lines)
            )
            if process.poll() is None:
                process.kill()
            self._restart_after = time.monotonic() + 1.0
            return False
        return True

    def _send(self, process: subprocess.Popen[bytes], data: bytes) -> None:
        """Write all of `data` to the writer's input, waiting (GIL released) while the pipe is
        full, up to `ack_timeout_s`."""
        fd = process.stdin.fileno()  # type: ignore[union-attr]
        deadline = time.monotonic() + self.ack_timeout_s
        view = memoryview(data)
        while view:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [fd], [], left)[1]:
                raise TimeoutError(f"the exposure writer took nothing for {self.ack_timeout_s} s")
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                continue

    def flush(self) -> int:
        """Hand over what is queued and wait until the writer has written it (or timed out)."""
        count = self._drain()
        with self._flush_lock:
            process = self._process
            if process is None or process.poll() is not None:
                return count
            self._acks += 1
            token = f"#flush {self._acks}".encode()
            try:
                self._send(process, token + b"\n")
                self._await_reply(process, token)
            except (OSError, TimeoutError):
                logger.warning("exposure writer did not confirm its writes", exc_info=True)
        return count

    def _await_reply(self, process: subprocess.Popen[bytes], token: bytes) -> None:
        """Read the writer's reply lines until `token` (it answers each flush in order)."""
        fd = process.stdout.fileno()  # type: ignore[union-attr]
        deadline = time.monotonic() + self.ack_timeout_s
        while True:
            lines = self._replies.split(b"\n")
            self._replies = lines.pop()
            if token in lines:
                return
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"no confirmation {token!r} within {self.ack_timeout_s} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise BrokenPipeError("the exposure writer closed its output")
            self._replies += chunk

    def close(self) -> None:
        self.stop()
        self.flush()
        process, self._process = self._process, None
        if process is None:
            return
        try:
            process.stdin.close()  # type: ignore[union-attr]
            process.wait(timeout=self.ack_timeout_s)
        except (OSError, subprocess.TimeoutExpired):
            logger.warning("exposure writer did not exit; killing it")
            process.kill()
            process.wait()
        finally:
            if process.stdout is not None:
                process.stdout.close()
