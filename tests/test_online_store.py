"""Online store contract, run against both adapters: a real SQLite file and a real Redis.

Redis tests use a unique key prefix per test and delete it afterwards; they skip when no Redis
answers at NEWSREC_TEST_REDIS_URL (default redis://127.0.0.1:6379/0).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import redis

from newsrec_assets.resources.online_store.base import (
    ArticleCache,
    ArticleMeta,
    ColdStartList,
    ListStore,
    ReadOnlyStore,
    StoreUnavailable,
    UserRecommendations,
)
from newsrec_assets.resources.online_store.redis import AsyncRedisReads, RedisArticleCache, RedisListStore
from newsrec_assets.resources.online_store.sqlite import SQLiteArticleCache, SQLiteListStore

REDIS_URL = os.environ.get("NEWSREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def redis_reachable() -> bool:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping()
    except redis.RedisError:
        return False
    return True


requires_redis = pytest.mark.skipif(not redis_reachable(), reason=f"no Redis answers at {REDIS_URL}")


def make_record(
    user_id: str,
    watermark: datetime,
    layer: str = "batch",
    tag: str = "x",
    n: int = 5,
    model_version: str = "m1",
    computed_at: datetime | None = None,
) -> UserRecommendations:
    """A list whose article ids carry `tag`, so a test can tell which write a reader sees."""
    return UserRecommendations(
        user_id=user_id,
        article_ids=[f"{tag}-{i}" for i in range(n)],
        scores=np.linspace(1.0, 0.1, n),
        model_version=model_version,
        layer=layer,
        computed_at=computed_at or watermark + timedelta(minutes=1),
        watermark=watermark,
        user_vector=np.arange(8, dtype=np.float32),
    )


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=requires_redis)])
def store(request, tmp_path) -> Iterator[ListStore]:
    if request.param == "sqlite":
        adapter: ListStore = SQLiteListStore(tmp_path / "online.sqlite")
        yield adapter
        adapter.close()
    else:
        adapter = RedisListStore(REDIS_URL, prefix=f"test-{uuid.uuid4().hex}")
        yield adapter
        adapter.clear()
        adapter.close()


@pytest.fixture
def articles(store, tmp_path) -> Iterator[ArticleCache]:
    """The article cache beside `store` (the same file, or the same Redis prefix)."""
    if isinstance(store, SQLiteListStore):
        cache: ArticleCache = SQLiteArticleCache(store.path)
    else:
        cache = RedisArticleCache(REDIS_URL, prefix=store.prefix)
    yield cache
    cache.close()


def a_reader(store: ListStore, tmp_path) -> ListStore:
    """A second handle on the same data, as another process would open it."""
    if isinstance(store, SQLiteListStore):
        return SQLiteListStore(store.path, read_only=True)
    assert isinstance(store, RedisListStore)
    return RedisListStore(REDIS_URL, prefix=store.prefix)


# ------------------------------------------------------------------------------------------------
# records


def test_unknown_user_has_no_list(store):
    assert store.get_recommendations("nobody") is None


def test_round_trip_keeps_every_field(store, tmp_path):
    record = UserRecommendations(
        user_id="u000042",
        article_ids=["a3", "a1", "a2"],
        scores=[0.75, 0.5, -1.25],
        model_version="naml-2026-11-20T10",
        layer="speed",
        computed_at=datetime(2026, 11, 20, 10, 5, 1, 123456, tzinfo=UTC),
        watermark=datetime(2026, 11, 20, 10, 5, 0, 654321, tzinfo=UTC),
        user_vector=np.array([0.1, -0.2, 0.3], dtype=np.float32),
    )
    assert store.put_recommendations(record).accepted

    got = a_reader(store, tmp_path).get_recommendations("u000042")

    assert got.article_ids == ("a3", "a1", "a2")
    assert got.scores.dtype == np.float32 and got.scores.tolist() == [0.75, 0.5, -1.25]
    assert got.user_vector.tolist() == record.user_vector.tolist()
    assert (got.model_version, got.layer) == ("naml-2026-11-20T10", "speed")
    assert got.computed_at == record.computed_at and got.watermark == record.watermark


def test_lists_are_kept_to_capacity(store):
    record = make_record("u1", T0, n=150)
    store.put_recommendations(record)
    got = store.get_recommendations("u1")
    assert store.capacity == 100
    assert got.article_ids == record.article_ids[:100]
    assert len(got.scores) == 100


def test_record_validation():
    with pytest.raises(ValueError):
        make_record("u1", T0, layer="nightly")
    with pytest.raises(ValueError):
        UserRecommendations("u1", ["a", "a"], [1.0, 0.5], "m1", "batch", T0, T0)
    with pytest.raises(ValueError):
        UserRecommendations("u1", ["a"], [1.0, 0.5], "m1", "batch", T0, T0)
    naive = UserRecommendations("u1", ["a"], [1.0], "m1", "batch", T0.replace(tzinfo=None), T0)
    assert naive.computed_at == T0  # naive means UTC


# ------------------------------------------------------------------------------------------------
# the watermark rule


def test_older_write_is_refused_equal_or_newer_wins(store):
    assert store.put_recommendations(make_record("u1", T0, "speed", tag="first")).accepted

    older = store.put_recommendations(make_record("u1", T0 - timedelta(seconds=1), "speed", tag="older"))
    assert not older.accepted and older.reason == "stale_watermark" and older.stored_watermark == T0
    assert store.get_recommendations("u1").article_ids[0] == "first-0"

    equal = store.put_recommendations(make_record("u1", T0, "speed", tag="equal"))
    assert equal.accepted  # equal watermark: the later write wins
    assert store.get_recommendations("u1").article_ids[0] == "equal-0"

    newer = store.put_recommendations(make_record("u1", T0 + timedelta(seconds=1), "speed", tag="newer"))
    assert newer.accepted and newer.stored_watermark == T0
    assert store.get_recommendations("u1").article_ids[0] == "newer-0"


def test_batch_publish_never_undoes_a_fresher_speed_list(store):
    store.publish_batch([make_record(u, T0, tag="batch1") for u in ("u1", "u2")])
    w2 = T0 + timedelta(minutes=20)
    assert store.put_recommendations(make_record("u1", w2, "speed", tag="speed")).accepted

    result = store.publish_batch(
        [make_record(u, T0 + timedelta(minutes=10), tag="batch2") for u in ("u1", "u2")]
    )

    assert result.published and result.speed_lists_kept == 1
    assert store.get_recommendations("u1").article_ids[0] == "speed-0"
    assert store.get_recommendations("u1").layer == "speed"
    assert store.get_recommendations("u2").article_ids[0] == "batch2-0"
    # A batch list is now what the reader sees for u2, so an older speed write is refused.
    assert not store.put_recommendations(make_record("u2", T0 + timedelta(minutes=5), "speed")).accepted


def test_speed_write_during_publish_survives_the_flip(store):
    """The race: batch computed from events up to W1; a speed write with W2 > W1 lands mid-publish."""
    w1 = T0
    store.publish_batch([make_record(u, w1 - timedelta(minutes=30), tag="old") for u in ("u1", "u2", "u3")])
    outcomes = {}

    def batch_records():
        yield make_record("u1", w1, tag="batch")
        # The batch is being staged: speed-layer writes land now, before the flip.
        outcomes["newer"] = store.put_recommendations(
            make_record("u1", w1 + timedelta(minutes=1), "speed", tag="speed")
        )
        outcomes["older"] = store.put_recommendations(
            make_record("u2", w1 - timedelta(minutes=1), "speed", tag="stale")
        )
        yield make_record("u2", w1, tag="batch")
        yield make_record("u3", w1, tag="batch")

    result = store.publish_batch(batch_records(), chunk_size=1)

    assert outcomes["newer"].accepted and outcomes["older"].accepted  # both newer than what readers saw
    assert result.published and result.users_written == 3 and result.speed_lists_kept == 1
    assert store.get_recommendations("u1").article_ids[0] == "speed-0"  # W2 > W1: speed survives
    assert store.get_recommendations("u2").article_ids[0] == "batch-0"  # older than the batch: superseded
    assert store.get_recommendations("u3").article_ids[0] == "batch-0"
    # The superseded live row was cleaned up: a write older than the batch is refused now.
    assert not store.put_recommendations(make_record("u2", w1 - timedelta(seconds=1), "speed")).accepted


def test_equal_watermark_later_write_wins_across_layers(store):
    store.put_recommendations(make_record("u1", T0, "speed", tag="speed"))
    store.publish_batch([make_record("u1", T0, tag="batch")])
    assert store.get_recommendations("u1").article_ids[0] == "batch-0"  # flip came later
    store.put_recommendations(make_record("u1", T0, "speed", tag="speed2"))
    assert store.get_recommendations("u1").article_ids[0] == "speed2-0"  # then the speed write


# ------------------------------------------------------------------------------------------------
# batch publishing


def test_publish_sets_generation_and_model_version(store):
    assert store.current_generation() is None
    result = store.publish_batch(
        [make_record(f"u{i}", T0 + timedelta(seconds=i)) for i in range(7)], model_version="m1"
    )
    info = store.current_generation()
    assert result.published and result.users_written == 7
    assert info.generation == result.generation and info.users == 7
    assert info.watermark == T0 + timedelta(seconds=6) == result.watermark
    assert store.get_model_version() == "m1"


def test_users_missing_from_a_new_generation_lose_their_batch_list(store):
    store.publish_batch([make_record("u1", T0), make_record("u2", T0)])
    store.publish_batch([make_record("u1", T0 + timedelta(minutes=30))])
    assert store.get_recommendations("u2") is None


def test_publish_of_an_older_generation_is_refused(store):
    store.publish_batch([make_record("u1", T0 + timedelta(hours=1), tag="new")])
    result = store.publish_batch([make_record("u1", T0, tag="old"), make_record("u9", T0, tag="old")])
    assert not result.published and "newer events" in result.reason
    assert store.get_recommendations("u1").article_ids[0] == "new-0"
    assert store.get_recommendations("u9") is None


def test_empty_batch_is_refused(store):
    store.publish_batch([make_record("u1", T0)])
    result = store.publish_batch([])
    assert not result.published and result.reason == "empty batch"
    assert store.get_recommendations("u1") is not None


def test_failed_publish_leaves_the_current_generation(store):
    store.publish_batch([make_record(u, T0, tag="good") for u in ("u1", "u2")])

    def broken():
        yield make_record("u1", T0 + timedelta(hours=1), tag="bad")
        raise RuntimeError("model crashed mid-batch")

    with pytest.raises(RuntimeError):
        store.publish_batch(broken(), chunk_size=1)
    assert store.get_recommendations("u1").article_ids[0] == "good-0"
    assert store.get_recommendations("u2").article_ids[0] == "good-0"


def test_old_generations_are_deleted(store):
    for i in range(3):
        store.publish_batch([make_record(u, T0 + timedelta(minutes=30 * i)) for u in ("u1", "u2")])
    if isinstance(store, SQLiteListStore):
        conn = store._lists.get()
        assert conn.execute("SELECT DISTINCT generation FROM batch_recs").fetchall() == [(3,)]
        assert conn.execute("SELECT count(*) FROM live_recs").fetchone() == (0,)
    else:
        keys = {k.decode() for k in store.client.scan_iter(match=store.key("b*"))}
        assert keys == {store.key("b:3"), store.key("bw:3")}


def _stage_in_threads(store: ListStore, batch_key: str, shards: dict[int, list[str]], tag: str) -> None:
    """Each shard staged by its own writer handle (another process or pod), side by side."""

    def stage(shard: int, users: list[str]) -> None:
        with a_writer(store) as writer:
            records = [make_record(u, T0 + timedelta(hours=1), tag=tag, model_version="m2") for u in users]
            writer.stage_shard(batch_key, shard, records, model_version="m2", chunk_size=2)

    threads = [threading.Thread(target=stage, args=item) for item in shards.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)


def test_a_sharded_batch_flips_only_once_every_shard_is_staged(store, tmp_path):
    users = [f"u{i}" for i in range(6)]
    store.publish_batch([make_record(u, T0, tag="old") for u in users], model_version="m1")
    _stage_in_threads(store, "cycle-1", {0: users[:2], 2: users[4:]}, tag="new")
    missing = store.publish_shards(3)
    assert not missing.published and "missing" in missing.reason
    reader = a_reader(store, tmp_path)
    assert set(_generation_tags(reader, users)) == {"old"} and reader.get_model_version() == "m1"

    _stage_in_threads(store, "cycle-1", {1: users[2:4]}, tag="new")
    result = store.publish_shards(3)
    assert result.published and result.users_written == 6
    assert set(_generation_tags(reader, users)) == {"new"}
    assert reader.get_model_version() == "m2" and reader.current_generation().users == 6
    assert _staged_rows(store) == 0

    # A shard retried after the flip stages apart: readers never see it.
    store.stage_shard(
        "cycle-1", 0, [make_record("u0", T0 + timedelta(hours=2), tag="late")], model_version="m2"
    )
    assert reader.get_recommendations("u0").article_ids[0] == "new-0"
    assert not store.publish_shards(3).published


def test_an_incomplete_sharded_batch_goes_once_a_newer_generation_is_published(store):
    store.stage_shard("cycle-1", 0, [make_record("u1", T0, tag="lost")], model_version="m1")
    _stage_in_threads(store, "cycle-2", {0: ["u1"], 1: ["u2"]}, tag="new")
    assert store.publish_shards(2).published
    assert _staged_rows(store) == 0
    assert store.get_recommendations("u1").article_ids[0] == "new-0"


def _generation_tags(store: ListStore, users: list[str]) -> list[str]:
    return [store.get_recommendations(u).article_ids[0].split("-")[0] for u in users]


def _poll_generations(store: ListStore, users: list[str], stop: threading.Event, seen: list[str]) -> None:
    while not stop.is_set():
        for user in users:
            record = store.get_recommendations(user)
            seen.append("missing" if record is None else record.article_ids[0].split("-")[0])


def _assert_single_flip(seen: list[str]) -> None:
    """Reads in order: only 'gen1', then only 'gen2'. Any other pattern is a mix of generations."""
    assert seen, "the reader observed nothing"
    assert set(seen) <= {"gen1", "gen2"}, set(seen)
    flips = sum(1 for before, after in zip(seen, seen[1:], strict=False) if before != after)
    assert flips <= 1, f"the reader saw the generations interleave ({flips} changes)"


def _slow_generation(users: list[str], watermark: datetime, tag: str):
    for i, user in enumerate(users):
        if i % 10 == 0:
            time.sleep(0.01)  # stretch the publish so readers run during it
        yield make_record(user, watermark, tag=tag)


def test_publish_is_atomic_for_a_concurrent_reader(store, tmp_path):
    users = [f"u{i:04d}" for i in range(300)]
    store.publish_batch(_slow_generation(users, T0, "gen1"), chunk_size=10)
    reader = a_reader(store, tmp_path)
    stop, seen = threading.Event(), []
    thread = threading.Thread(target=_poll_generations, args=(reader, users, stop, seen))
    thread.start()
    try:
        time.sleep(0.05)
        store.publish_batch(_slow_generation(users, T0 + timedelta(minutes=30), "gen2"), chunk_size=10)
        time.sleep(0.05)
    finally:
        stop.set()
        thread.join()
    assert "gen1" in seen and "gen2" in seen  # the reader ran before and after the flip
    _assert_single_flip(seen)
    assert set(_generation_tags(reader, users)) == {"gen2"}


def _reader_process(path: str, users: list[str], queue, stop) -> None:
    store = SQLiteListStore(path, read_only=True)
    seen: list[str] = []
    while not stop.is_set():
        for user in users:
            record = store.get_recommendations(user)
            seen.append("missing" if record is None else record.article_ids[0].split("-")[0])
        if len(seen) == len(users):
            queue.put("ready")
    queue.put(seen)


def test_sqlite_publish_is_atomic_for_a_reader_process(tmp_path):
    store = SQLiteListStore(tmp_path / "online.sqlite")
    users = [f"u{i:04d}" for i in range(300)]
    store.publish_batch(_slow_generation(users, T0, "gen1"), chunk_size=10)
    context = multiprocessing.get_context("spawn")
    queue, stop = context.Queue(), context.Event()
    process = context.Process(target=_reader_process, args=(str(store.path), users, queue, stop))
    process.start()
    try:
        assert queue.get(timeout=60) == "ready"
        store.publish_batch(_slow_generation(users, T0 + timedelta(minutes=30), "gen2"), chunk_size=10)
        time.sleep(0.1)
    finally:
        stop.set()
        seen = queue.get(timeout=60)
        process.join(timeout=30)
    assert "gen1" in seen and "gen2" in seen
    _assert_single_flip(seen)


def test_sqlite_files_are_made_with_16k_pages_and_read_through_a_mapping(tmp_path):
    """Two ~2 KB list records do not fit a 4 KB page: 16 KB pages store 1M users in 2.2 GB, not 3.8."""
    writer = SQLiteListStore(tmp_path / "online.sqlite")
    writer.publish_batch([make_record("u1", T0, model_version="gen1")])
    reader = SQLiteListStore(tmp_path / "online.sqlite", read_only=True)
    try:
        assert writer._lists.get().execute("PRAGMA page_size").fetchone()[0] == 16384
        assert reader._lists.get().execute("PRAGMA mmap_size").fetchone()[0] > 0
        assert reader.get_recommendations("u1").model_version == "gen1"
    finally:
        reader.close()
        writer.close()


# ------------------------------------------------------------------------------------------------
# crashed publishes, lease, file size


def _sizes(path: Path) -> int:
    """The lists file's size after a checkpoint has moved the WAL into it."""
    with SQLiteListStore(path) as store:
        store._lists.get().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    return path.stat().st_size


def _staged_rows(store: ListStore) -> int:
    if isinstance(store, SQLiteListStore):
        conn = store._lists.get()
        current = conn.execute("SELECT generation FROM current_generation").fetchone()
        return conn.execute("SELECT count(*) FROM batch_recs WHERE generation != ?", current).fetchone()[0]
    keys = {k.decode() for k in store.client.scan_iter(match=store.key("b*"))}
    current = store.client.hget(store.key("current"), "gen").decode()
    return len(keys - {store.key(f"b:{current}"), store.key(f"bw:{current}")})


_CRASHING_PUBLISHER = """
import sys, time
from datetime import UTC, datetime
import numpy as np
from newsrec_assets.resources.online_store.base import UserRecommendations
backend, where, prefix, marker = sys.argv[1:5]
if backend == "sqlite":
    from newsrec_assets.resources.online_store.sqlite import SQLiteListStore
    store = SQLiteListStore(where)
else:
    from newsrec_assets.resources.online_store.redis import RedisListStore
    store = RedisListStore(where, prefix=prefix, lease_seconds=1)
def records():
    for i in range(100_000):
        if i == 2100:
            open(marker, "w").close()  # 2,000 users staged: kill me now
            time.sleep(600)
        at = datetime(2026, 11, 21, tzinfo=UTC)
        ids = [f"crash-{j}" for j in range(100)]
        yield UserRecommendations(f"u{i:05d}", ids, np.ones(100), "m9", "batch", at, at, np.ones(128))
store.publish_batch(records(), chunk_size=100)
"""


def test_a_publisher_killed_mid_publish_leaves_the_old_generation_whole_and_nothing_behind(store, tmp_path):
    """kill -9 of a publishing process: readers keep the old generation; the next publish (and,
    for SQLite, the next writer to open the file) deletes the staged rows, and the file shrinks."""
    users = [f"u{i:05d}" for i in range(200)]
    store.publish_batch([make_record(u, T0, tag="old") for u in users])
    marker = tmp_path / "staged"
    sqlite = isinstance(store, SQLiteListStore)
    where, prefix = (str(store.path), "") if sqlite else (REDIS_URL, store.prefix)
    publisher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CRASHING_PUBLISHER,
            "sqlite" if sqlite else "redis",
            where,
            prefix,
            str(marker),
        ]
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert publisher.poll() is None and time.monotonic() < deadline, "the publisher never staged"
            time.sleep(0.05)
    finally:
        os.kill(publisher.pid, signal.SIGKILL)
        publisher.wait()
    assert _staged_rows(store) > 0
    reopened = a_reader(store, tmp_path)
    assert set(_generation_tags(reopened, users)) == {"old"}  # the old generation, whole
    assert reopened.get_recommendations("u01000") is None  # nothing staged is visible
    if sqlite:  # as the crash left it: the file and its write-ahead log
        crashed_size = sum(p.stat().st_size for p in (store.path, Path(f"{store.path}-wal")) if p.exists())
        assert SQLiteListStore(store.path).clean_abandoned() == 0  # opening it already cleaned up
        assert _staged_rows(store) == 0
    result = store.publish_batch([make_record(u, T0 + timedelta(minutes=30), tag="new") for u in users])
    assert result.published and _staged_rows(store) == 0
    assert set(_generation_tags(reopened, users)) == {"new"}
    if sqlite:
        assert _sizes(store.path) < crashed_size / 2


def test_sqlite_file_shrinks_once_free_pages_exceed_the_live_data(tmp_path):
    store = SQLiteListStore(tmp_path / "online.sqlite")
    store.publish_batch([make_record(f"u{i:05d}", T0, n=100) for i in range(3000)])
    big = _sizes(store.path)
    store.publish_batch([make_record(f"u{i:05d}", T0 + timedelta(hours=1), n=100) for i in range(300)])
    assert _sizes(store.path) < big / 3
    assert store._lists.get().execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental


def test_sqlite_file_made_without_incremental_vacuum_is_converted_when_it_would_shrink(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    sqlite3.connect(path).executescript(
        "PRAGMA page_size = 16384; PRAGMA journal_mode = WAL;"
    )  # no auto_vacuum
    store = SQLiteListStore(path)
    assert store._lists.get().execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    store.publish_batch([make_record(f"u{i:05d}", T0, n=100) for i in range(3000)])
    big = _sizes(path)
    store.publish_batch([make_record(f"u{i:05d}", T0 + timedelta(hours=1), n=100) for i in range(300)])
    assert _sizes(path) < big / 3
    assert store._lists.get().execute("PRAGMA auto_vacuum").fetchone()[0] == 2


def test_a_running_publish_is_never_cleaned_up_and_a_second_one_waits(store, tmp_path):
    """Opening a writer while a publish stages leaves its rows alone; a second publish waits for
    the first instead of deleting its staged generation."""
    other = SQLiteListStore(store.path) if isinstance(store, SQLiteListStore) else None
    staged, second = threading.Event(), {}

    def slow():
        for i in range(40):
            if i == 20:
                staged.set()
                time.sleep(0.3)
            yield make_record(f"u{i:03d}", T0, tag="first")

    def publish_second():
        staged.wait(30)
        second["result"] = a_writer(store).publish_batch(
            [make_record("u000", T0 + timedelta(hours=1), tag="second")]
        )

    thread = threading.Thread(target=publish_second)
    thread.start()
    first = store.publish_batch(slow(), chunk_size=5)
    thread.join(30)
    if other is not None:
        assert other.clean_abandoned() == 0
    assert first.published and first.users_written == 40
    assert second["result"].published  # it ran after the first one, not over it
    assert store.get_recommendations("u000").article_ids[0] == "second-0"


def a_writer(store: ListStore) -> ListStore:
    if isinstance(store, SQLiteListStore):
        return SQLiteListStore(store.path)
    return RedisListStore(REDIS_URL, prefix=store.prefix)


# ------------------------------------------------------------------------------------------------
# articles, vectors, cold start, model version


def test_articles_and_fresh_vectors(articles):
    metas = [
        ArticleMeta("a1", "Old news", "news", "world", T0 - timedelta(days=3), "https://news.example/a1"),
        ArticleMeta("a2", "Fresh", "sports", "football", T0 + timedelta(minutes=5)),
        ArticleMeta("a3", "Fresher", "news", "politics", T0 + timedelta(minutes=10)),
    ]
    assert articles.article_revision() == 0
    assert articles.upsert_articles(metas) == 3
    after_upsert = articles.article_revision()
    assert after_upsert > 0
    articles.put_article_vectors(["a1", "a2"], np.array([[1.0, 0.0], [0.0, 1.0]]), "m1")
    articles.put_article_vectors(["a3"], np.array([[0.5, 0.5]]), "m0")  # another model version

    assert articles.get_articles(["a1", "missing", "a2"]) == {"a1": metas[0], "a2": metas[1]}
    assert [a.article_id for a in articles.recent_articles(2)] == ["a3", "a2"]

    fresh = articles.get_fresh_articles(T0, "m1")
    assert fresh.article_ids.tolist() == ["a2"] and fresh.vectors.tolist() == [[0.0, 1.0]]
    assert fresh.published_at_us.tolist() == [int((T0 + timedelta(minutes=5)).timestamp() * 1_000_000)]
    assert len(articles.get_fresh_articles(T0 - timedelta(days=4), "m1")) == 2

    assert articles.article_revision() == after_upsert  # vectors are not metadata
    articles.delete_articles(["a2"])
    assert articles.get_articles(["a2"]) == {} and len(articles.get_fresh_articles(T0, "m1")) == 0
    assert articles.article_revision() > after_upsert  # readers' metadata caches must drop a2


def test_cold_start_and_model_version(store):
    assert store.get_cold_start() is None and store.get_model_version() is None
    store.put_cold_start(ColdStartList(["a2", "a1"], [0.9, 0.4], T0, "m1"))
    cold = store.get_cold_start()
    assert cold.article_ids == ("a2", "a1") and cold.scores.tolist() == pytest.approx([0.9, 0.4])
    assert cold.computed_at == T0 and cold.model_version == "m1"
    store.set_model_version("m1")
    store.set_model_version("m2")
    assert store.get_model_version() == "m2"


# ------------------------------------------------------------------------------------------------
# the speed layer's recent clicks


def test_recent_clicks_are_kept_once_per_click_and_forgotten_after_a_batch(store):
    store.add_recent_clicks([("u1", "a1", 100), ("u1", "a2", 300), ("u2", "a1", 200), ("u1", "a1", 100)])
    assert store.recent_clicks(["u1", "u2", "u3"], after_us=0) == {
        "u1": [("a2", 300), ("a1", 100)],
        "u2": [("a1", 200)],
        "u3": [],
    }
    assert store.recent_clicks(["u1"], after_us=150) == {"u1": [("a2", 300)]}
    assert store.forget_recent_clicks(200) == 2
    assert store.recent_clicks(["u1", "u2"], after_us=0) == {"u1": [("a2", 300)], "u2": []}


# ------------------------------------------------------------------------------------------------
# failure modes


def test_sqlite_read_only_handle(tmp_path):
    SQLiteListStore(tmp_path / "online.sqlite").put_recommendations(make_record("u1", T0))
    reader = SQLiteListStore(tmp_path / "online.sqlite", read_only=True)
    assert reader.get_recommendations("u1") is not None
    with pytest.raises(ReadOnlyStore):
        reader.put_recommendations(make_record("u1", T0 + timedelta(hours=1)))


def test_sqlite_missing_file_is_unavailable(tmp_path):
    reader = SQLiteListStore(tmp_path / "nowhere.sqlite", read_only=True)
    with pytest.raises(StoreUnavailable):
        reader.ping()
    with pytest.raises(StoreUnavailable):
        reader.get_recommendations("u1")


def test_redis_unreachable_is_unavailable():
    store = RedisListStore("redis://127.0.0.1:1/0", prefix="nowhere", socket_timeout=0.2)
    with pytest.raises(StoreUnavailable):
        store.ping()
    with pytest.raises(StoreUnavailable):
        store.get_recommendations("u1")
    reads = AsyncRedisReads("redis://127.0.0.1:1/0", prefix="nowhere", socket_timeout=0.2)
    with pytest.raises(StoreUnavailable):
        asyncio.run(reads.get_recommendations("u1"))


@requires_redis
def test_async_reads_see_what_the_blocking_store_sees_and_survive_a_flush_and_a_dropped_connection():
    prefix = f"test-{uuid.uuid4().hex}"
    store, articles = RedisListStore(REDIS_URL, prefix=prefix), RedisArticleCache(REDIS_URL, prefix=prefix)
    users = [f"u{i:03d}" for i in range(30)]
    store.publish_batch([make_record(user, T0, tag=user) for user in users])
    articles.upsert_articles([ArticleMeta("a1", "Title", "news", "world", T0)])

    async def scenario() -> None:
        reads = AsyncRedisReads(REDIS_URL, prefix=prefix)
        try:
            lists = await asyncio.gather(*(reads.get_recommendations(user) for user in [*users, "nobody"]))
            assert [record.article_ids[0] for record in lists[:-1]] == [f"{user}-0" for user in users]
            assert lists[-1] is None
            store.client.script_flush()
            assert (await reads.get_recommendations("u001")).article_ids[0] == "u001-0"
            assert await reads.get_articles(["a1", "nope"]) == articles.get_articles(["a1", "nope"])
            store.client.client_kill_filter(_id=await reads.client.client_id())  # the server drops us
            assert (await reads.get_recommendations("u002")).article_ids[0] == "u002-0"  # reconnected
        finally:
            await reads.close()

    try:
        asyncio.run(scenario())
    finally:
        store.clear()
        store.close()
