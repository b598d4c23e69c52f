"""The exposure writer process: `python -m serving.services.exposure_writer`, started by the API.

Protocol on stdin (`ProcessExposureLogger` speaks it): the first line is the API's settings as
JSON, from which the writer opens the same online store; then one rendered exposure per line
(`[request_id, user_id, [article_id, ...], served_at_us]`), or a line `#flush <n>`, which the
writer answers on stdout with the same line once everything before it is written. End of input
(the API closed the pipe, or died) makes it write what it holds and exit.

It ignores SIGINT and SIGTERM (see `main`) and lowers its own CPU priority: on a machine whose
cores the API workers need for their requests, the batch writes should wait, not the requests.
While the store is unavailable it keeps its batch and retries with backoff; meanwhile the pipe
fills up and the API's queue takes over (bounded, counted drops).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime

import orjson

from newsrec_assets.resources.online_store import OnlineStore, StoreError
from newsrec_assets.resources.online_store.base import from_us
from serving.core.config import Settings

logger = logging.getLogger("serving.services.exposure_writer")

NICENESS = 10
_FLUSH = b"#flush "


def decode_exposures(lines: Sequence[bytes]) -> list[tuple[str, list[str], datetime, str]]:
    """Rendered exposure lines as `OnlineStore.log_exposures` takes them (malformed ones are
    logged and skipped)."""
    rows = []
    for line in lines:
        try:
            request_id, user_id, article_ids, served_at_us = orjson.loads(line)
            rows.append((user_id, article_ids, from_us(served_at_us), request_id))
        except (ValueError, TypeError):  # a line cut short by a writer that was replaced
            logger.error("skipping a malformed exposure line: %r", line[:200])
    return rows


def write_with_retry(
    store: OnlineStore,
    lines: list[bytes],
    sleep: Callable[[float], None] = time.sleep,
    max_wait_s: float = 5.0,
) -> None:
    """Write rendered exposures in calls of the store's `exposures_per_call`, retrying each call
    until the store takes it."""
    per_call = store.exposures_per_call
    for start in range(0, len(lines), per_call):
        rows = decode_exposures(lines[start : start + per_call])
        wait = 0.1
        while True:
            try:
                store.log_exposures(rows)
                break
            except StoreError:
                logger.warning("%d exposures not written; retry in %.1f s", len(rows), wait, exc_info=True)
                sleep(wait)
                wait = min(wait * 2, max_wait_s)


def serve(read: Callable[[], bytes], stdout_fd: int, store: OnlineStore) -> None:
    """Read exposure lines until end of input (`read()` returns b""), writing each chunk that
    arrived as batches and answering flush lines."""
    partial = b""
    while True:
        chunk = read()
        lines = (partial + chunk).split(b"\n")
        partial = lines.pop() if chunk else b""
        exposures: list[bytes] = []
        for line in lines:
            if line.startswith(_FLUSH):
                write_with_retry(store, exposures)
                exposures = []
                os.write(stdout_fd, line + b"\n")
            elif line:
                exposures.append(line)
        write_with_retry(store, exposures)
        if not chunk:
            return


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s exposure-writer %(levelname)s %(message)s")
    with contextlib.suppress(OSError):  # not permitted everywhere; then it runs at the API's priority
        os.nice(NICENESS)
    # A signal to the API's process group (Ctrl-C, a service manager's SIGTERM) must not cut a
    # batch short: the writer stops when its input ends, which happens when the API closes the
    # pipe on shutdown or dies, after writing everything it was handed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from serving.core.store import build_store

    stdin = sys.stdin.buffer
    settings = Settings.model_validate_json(stdin.readline())
    store = build_store(settings)
    try:
        # read1: what is buffered (readline may have read past the settings line), else one read.
        serve(lambda: stdin.read1(1 << 20), sys.stdout.fileno(), store)
    finally:
        store.close()


if __name__ == "__main__":
    main()
