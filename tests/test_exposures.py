"""The exposure log writers: the writer process and its pipe protocol, and the thread writer.

Real SQLite files, a real writer process (`python -m serving.services.exposure_writer`), real
pipes; the API-level test (`test_api.py::test_served_lists_are_logged_as_exposures`) covers both
backends through HTTP.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from newsrec_assets.resources.online_store import SQLiteOnlineStore, StoreUnavailable
from newsrec_assets.resources.online_store.base import to_us
from serving.core.config import Settings
from serving.core.metrics import Metrics
from serving.services.exposure_writer import decode_exposures, serve, write_with_retry
from serving.services.exposures import ProcessExposureLogger, ThreadExposureLogger

SERVED_AT = datetime(2026, 11, 20, 6, 0, 0, 123456, tzinfo=UTC)


def line(i: int) -> bytes:
    return orjson.dumps([f"r{i}", f"u{i}", [f"a{i}", f"b{i}"], to_us(SERVED_AT) + i])


def dropped(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("newsrec_exposures_dropped_total") or 0.0


@pytest.fixture
def lists_path(tmp_path: Path) -> Path:
    path = tmp_path / "online.sqlite"
    SQLiteOnlineStore(path).close()  # the API opens the lists file read-only: it must exist
    return path


def settings_json(lists_path: Path) -> bytes:
    return Settings(store_backend="sqlite", sqlite_path=lists_path).model_dump_json().encode()


def logged(lists_path: Path) -> list[tuple[str, str, tuple[str, ...], datetime]]:
    store = SQLiteOnlineStore(lists_path)
    try:
        return [
            (e.request_id, e.user_id, e.article_ids, e.served_at) for e in store.read_exposures(limit=10_000)
        ]
    finally:
        store.close()


def test_decoded_lines_are_what_log_exposures_takes():
    assert decode_exposures([line(7)]) == [("u7", ["a7", "b7"], SERVED_AT.replace(microsecond=123463), "r7")]


def test_serve_writes_batches_and_answers_each_flush_after_what_came_before(lists_path):
    """Lines may be split anywhere across reads; a flush is answered only once every line before
    it is in the store; the end of input ends `serve` after writing the rest."""
    store = SQLiteOnlineStore(lists_path)
    stream = b"\n".join([line(1), line(2), b"#flush 1", line(3), b"#flush 2", line(4)]) + b"\n"
    reads = iter([stream[i : i + 7] for i in range(0, len(stream), 7)] + [b""])
    answers_r, answers_w = os.pipe()
    os.set_blocking(answers_r, False)
    stored_when_answered: list[tuple[bytes, int]] = []

    def read() -> bytes:  # between two reads, look at what was answered and what is stored
        with contextlib.suppress(BlockingIOError):
            for answer in os.read(answers_r, 4096).splitlines():
                stored_when_answered.append((answer, len(store.read_exposures())))
        return next(reads)

    try:
        serve(read, answers_w, store)
    finally:
        os.close(answers_r)
        os.close(answers_w)
    assert stored_when_answered == [(b"#flush 1", 2), (b"#flush 2", 3)]
    assert [e.request_id for e in store.read_exposures()] == ["r1", "r2", "r3", "r4"]
    store.close()


def test_write_with_retry_keeps_the_batch_until_the_store_takes_it(lists_path):
    store = SQLiteOnlineStore(lists_path)
    calls: list[int] = []
    real = store.log_exposures

    def flaky(rows):
        calls.append(len(rows))
        if len(calls) < 3:
            raise StoreUnavailable("sqlite: database is locked")
        return real(rows)

    store.log_exposures = flaky  # type: ignore[method-assign]
    sleeps: list[float] = []
    write_with_retry(store, [line(i) for i in range(5)], sleep=sleeps.append)
    assert calls == [5, 5, 5] and sleeps == [0.1, 0.2]
    assert len(store.read_exposures()) == 5
    store.close()


def test_write_with_retry_splits_into_calls_the_store_takes_and_retries_only_the_failed_one(lists_path):
    store = SQLiteOnlineStore(lists_path)
    store.exposures_per_call = 3  # as a Redis store keeps its script calls short
    calls: list[list[str]] = []
    real = store.log_exposures

    def fails_once_on_the_second_call(rows):
        calls.append([request_id for *_, request_id in rows])
        if len(calls) == 2:
            raise StoreUnavailable("sqlite: database is locked")
        return real(rows)

    store.log_exposures = fails_once_on_the_second_call  # type: ignore[method-assign]
    write_with_retry(store, [line(i) for i in range(7)], sleep=lambda _: None)
    assert calls == [["r0", "r1", "r2"], ["r3", "r4", "r5"], ["r3", "r4", "r5"], ["r6"]]
    assert [e.request_id for e in store.read_exposures()] == [f"r{i}" for i in range(7)]  # once each
    store.close()


def test_writer_process_logs_what_the_api_queued(lists_path):
    metrics = Metrics()
    writer = ProcessExposureLogger(settings_json(lists_path), metrics, flush_interval_s=0.05)
    try:
        writer.append("u1", ["a1", "a2"], to_us(SERVED_AT), "r1")
        writer.append("u2", ["a3"], to_us(SERVED_AT) + 5, "r2")
        assert writer.flush() == 2
        assert logged(lists_path) == [
            ("r1", "u1", ("a1", "a2"), SERVED_AT),
            ("r2", "u2", ("a3",), SERVED_AT.replace(microsecond=123461)),
        ]
        # Without an explicit flush, the background thread hands lines over on its interval.
        writer.append("u3", ["a4"], to_us(SERVED_AT), "r3")
        deadline = time.monotonic() + 10
        while len(logged(lists_path)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [row[0] for row in logged(lists_path)] == ["r1", "r2", "r3"]
        process = writer._process
        assert process is not None and process.poll() is None
    finally:
        writer.close()
    assert process.wait(timeout=10) == 0  # closing the pipe ends the writer
    assert dropped(metrics) == 0


def test_start_runs_the_writer_before_the_first_exposure(lists_path, caplog):
    writer = ProcessExposureLogger(settings_json(lists_path), Metrics(), flush_interval_s=60)
    try:
        writer.start()
        process = writer._process
        assert process is not None and process.poll() is None
        # It answered start's flush: it has read its settings and opened the store.
        assert writer._acks == 1 and "did not confirm" not in caplog.text
        writer.append("u1", ["a1"], to_us(SERVED_AT), "r1")
        writer.flush()
        assert writer._process is process  # the same writer, not a second start
        assert [row[0] for row in logged(lists_path)] == ["r1"]
    finally:
        writer.close()


def test_the_writer_of_a_sqlite_store_does_not_import_redis(lists_path):
    """The writer starts with every API worker: redis-py (~0.1 s to import) is only for Redis."""
    check = (
        "import sys, serving.services.exposure_writer as w, serving.core.store as s; "
        f"s.build_store(w.Settings(store_backend='sqlite', sqlite_path={str(lists_path)!r})).close(); "
        "assert 'redis' not in sys.modules, 'redis imported'"
    )
    subprocess.run([sys.executable, "-c", check], check=True, cwd=Path(__file__).parent.parent)


def test_a_writer_that_cannot_start_does_not_stop_the_app_starting(lists_path, caplog):
    writer = ProcessExposureLogger(settings_json(lists_path), Metrics(), command=["/nonexistent/python"])
    writer.start()  # logs, does not raise: the API serves without its exposure log meanwhile
    assert writer._process is None
    assert "could not start the exposure writer" in caplog.text
    writer.stop()


def test_close_writes_what_is_queued_and_signals_do_not_cut_the_writer_short(lists_path):
    writer = ProcessExposureLogger(settings_json(lists_path), Metrics(), flush_interval_s=60)
    writer.append("u0", ["a0"], to_us(SERVED_AT), "r0")
    writer.flush()  # the writer runs
    process = writer._process
    assert process is not None
    process.send_signal(signal.SIGTERM)  # as a service manager stopping the API's process group
    for i in range(1, 200):
        writer.append(f"u{i}", [f"a{i}"], to_us(SERVED_AT), f"r{i}")
    writer.close()
    assert len(logged(lists_path)) == 200
    assert process.returncode == 0


def test_a_dead_writer_is_restarted_and_later_exposures_are_logged(lists_path):
    writer = ProcessExposureLogger(settings_json(lists_path), Metrics(), flush_interval_s=60)
    try:
        writer.append("u1", ["a1"], to_us(SERVED_AT), "r1")
        writer.flush()
        first = writer._process
        assert first is not None
        first.kill()
        first.wait(timeout=10)
        writer._restart_after = 0.0
        writer.append("u2", ["a2"], to_us(SERVED_AT), "r2")
        writer.flush()
        assert writer._process is not None and writer._process.pid != first.pid
        assert [row[0] for row in logged(lists_path)] == ["r1", "r2"]
    finally:
        writer.close()


def test_a_writer_that_cannot_start_keeps_the_queue_bounded(lists_path, caplog):
    metrics = Metrics()
    writer = ProcessExposureLogger(
        settings_json(lists_path), metrics, max_pending=3, command=["/nonexistent/python"]
    )
    for i in range(5):
        writer.append(f"u{i}", ["a"], to_us(SERVED_AT), f"r{i}")
    assert writer.flush() == 0  # nothing could be handed over: kept
    assert dropped(metrics) == 2  # the queue holds 3, the two oldest went
    assert len(writer._pending) == 3
    assert "could not start the exposure writer" in caplog.text
    writer.stop()


def test_thread_writer_keeps_exposures_while_the_store_is_down(lists_path):
    store = SQLiteOnlineStore(lists_path)
    real = store.log_exposures
    down = True

    def maybe(rows):
        if down:
            raise StoreUnavailable("sqlite: disk I/O error")
        return real(rows)

    store.log_exposures = maybe  # type: ignore[method-assign]
    writer = ThreadExposureLogger(store, Metrics(), flush_interval_s=60, max_batch=2)
    for i in range(5):
        writer.append(f"u{i}", ["a"], to_us(SERVED_AT), f"r{i}")
    assert writer.flush() == 0
    down = False
    assert writer.flush() == 5
    writer.close()
    assert [e.request_id for e in store.read_exposures()] == [f"r{i}" for i in range(5)]
    store.close()


def test_a_writer_that_takes_nothing_is_replaced_and_the_exposures_are_kept(lists_path, caplog):
    """A writer stuck longer than the deadline (its store down, say) does not hang the API's
    flush or shutdown: it is killed, and what could not be handed over stays queued."""
    writer = ProcessExposureLogger(
        settings_json(lists_path), Metrics(), flush_interval_s=60, ack_timeout_s=0.5, command=["sleep", "30"]
    )
    for i in range(3000):  # about 200 KB: more than a pipe holds
        writer.append(f"u{i}", [f"a{i}", f"b{i}"], to_us(SERVED_AT), f"request-{i:032d}")
    stuck = writer._writer()
    start = time.monotonic()
    assert writer.flush() == 0
    assert time.monotonic() - start < 5
    assert stuck.wait(timeout=5) != 0  # killed
    assert len(writer._pending) == 3000
    assert "exposure writer failed" in caplog.text
    writer.stop()


def test_malformed_lines_are_skipped_not_fatal(caplog):
    rows = decode_exposures([line(1), b'["r2", "u2"', line(3)])
    assert [row[3] for row in rows] == ["r1", "r3"]
    assert "malformed exposure line" in caplog.text
