"""Online store contract, run against both adapters: a real SQLite file and a real Redis.

Redis tests use a unique key prefix per test and delete it afterwards; they skip when no Redis
answers at NEWSREC_TEST_REDIS_URL (default redis://127.0.0.1:6379/0).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import redis

from newsrec_assets.resources.online_store import (
    ArticleMeta,
    ColdStartList,
    OnlineStore,
    ReadOnlyStore,
    RedisOnlineStore,
    SQLiteOnlineStore,
    StoreUnavailable,
    UserRecommendations,
)

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
def store(request, tmp_path) -> Iterator[OnlineStore]:
    if request.param == "sqlite":
        adapter: OnlineStore = SQLiteOnlineStore(tmp_path / "online.sqlite")
        yield adapter
        adapter.close()
    else:
        adapter = RedisOnlineStore(REDIS_URL, prefix=f"test-{uuid.uuid4().hex}")
        yield adapter
        adapter.clear()
        adapter.close()


def a_reader(store: OnlineStore, tmp_path) -> OnlineStore:
    """A second handle on the same data, as another process would open it."""
    if isinstance(store, SQLiteOnlineStore):
        return SQLiteOnlineStore(store.path, read_only=True)
    assert isinstance(store, RedisOnlineStore)
    return RedisOnlineStore(REDIS_URL, prefix=store.prefix)


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
    assert store.get_model_version().version == "m1"


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
    if isinstance(store, SQLiteOnlineStore):
        conn = store._lists()
        assert conn.execute("SELECT DISTINCT generation FROM batch_recs").fetchall() == [(3,)]
        assert conn.execute("SELECT count(*) FROM live_recs").fetchone() == (0,)
    else:
        keys = {k.decode() for k in store.client.scan_iter(match=store.key("b*"))}
        assert keys == {store.key("b:3"), store.key("bw:3")}


def _generation_tags(store: OnlineStore, users: list[str]) -> list[str]:
    return [store.get_recommendations(u).article_ids[0].split("-")[0] for u in users]


def _poll_generations(store: OnlineStore, users: list[str], stop: threading.Event, seen: list[str]) -> None:
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
    store = SQLiteOnlineStore(path, read_only=True)
    seen: list[str] = []
    while not stop.is_set():
        for user in users:
            record = store.get_recommendations(user)
            seen.append("missing" if record is None else record.article_ids[0].split("-")[0])
        if len(seen) == len(users):
            queue.put("ready")
    queue.put(seen)


def test_sqlite_publish_is_atomic_for_a_reader_process(tmp_path):
    store = SQLiteOnlineStore(tmp_path / "online.sqlite")
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
    writer = SQLiteOnlineStore(tmp_path / "online.sqlite")
    writer.publish_batch([make_record("u1", T0, model_version="gen1")])
    reader = SQLiteOnlineStore(tmp_path / "online.sqlite", read_only=True)
    try:
        assert writer._lists().execute("PRAGMA page_size").fetchone()[0] == 16384
        assert reader._lists().execute("PRAGMA mmap_size").fetchone()[0] > 0
        assert reader.get_recommendations("u1").model_version == "gen1"
    finally:
        reader.close()
        writer.close()


# ------------------------------------------------------------------------------------------------
# articles, vectors, cold start, model version


def test_articles_and_fresh_vectors(store):
    articles = [
        ArticleMeta("a1", "Old news", "news", "world", T0 - timedelta(days=3), "https://news.example/a1"),
        ArticleMeta("a2", "Fresh", "sports", "football", T0 + timedelta(minutes=5)),
        ArticleMeta("a3", "Fresher", "news", "politics", T0 + timedelta(minutes=10)),
    ]
    assert store.article_revision() == 0
    assert store.upsert_articles(articles) == 3
    after_upsert = store.article_revision()
    assert after_upsert > 0
    store.put_article_vectors(["a1", "a2"], np.array([[1.0, 0.0], [0.0, 1.0]]), "m1")
    store.put_article_vectors(["a3"], np.array([[0.5, 0.5]]), "m0")  # another model version

    assert store.get_articles(["a1", "missing", "a2"]) == {"a1": articles[0], "a2": articles[1]}
    assert [a.article_id for a in store.recent_articles(2)] == ["a3", "a2"]

    fresh = store.get_fresh_articles(T0, "m1")
    assert fresh.article_ids.tolist() == ["a2"] and fresh.vectors.tolist() == [[0.0, 1.0]]
    assert fresh.published_at_us.tolist() == [int((T0 + timedelta(minutes=5)).timestamp() * 1_000_000)]
    assert len(store.get_fresh_articles(T0 - timedelta(days=4), "m1")) == 2

    assert store.prune_article_vectors(T0) == 1  # a1's vector is too old to be fresh
    assert store.get_fresh_articles(T0 - timedelta(days=4), "m1").article_ids.tolist() == ["a2"]

    assert store.article_revision() == after_upsert  # vectors are not metadata
    store.delete_articles(["a2"])
    assert store.get_articles(["a2"]) == {} and len(store.get_fresh_articles(T0, "m1")) == 0
    assert store.article_revision() > after_upsert  # readers' metadata caches must drop a2


def test_cold_start_and_model_version(store):
    assert store.get_cold_start() is None and store.get_model_version() is None
    store.put_cold_start(ColdStartList(["a2", "a1"], [0.9, 0.4], T0, "m1"))
    cold = store.get_cold_start()
    assert cold.article_ids == ("a2", "a1") and cold.scores.tolist() == pytest.approx([0.9, 0.4])
    assert cold.computed_at == T0 and cold.model_version == "m1"

    store.set_model_version("m1", {"trained_on": "2026-11-19"})
    store.set_model_version("m1")  # without metadata: the same version keeps its metadata
    assert store.get_model_version().metadata == {"trained_on": "2026-11-19"}
    store.set_model_version("m2")
    model = store.get_model_version()
    assert model.version == "m2" and model.metadata == {}


# ------------------------------------------------------------------------------------------------
# logs written by the API


def test_exposure_log(store):
    store.log_exposure("u1", ["a1", "a2"], T0, "req-1")
    store.log_exposure("u2", ["a3"], T0 + timedelta(seconds=1), "req-2")
    first, second = store.read_exposures()
    assert (first.request_id, first.user_id, first.article_ids, first.served_at) == (
        "req-1",
        "u1",
        ("a1", "a2"),
        T0,
    )
    assert [e.request_id for e in store.read_exposures(after=first.cursor)] == ["req-2"]
    assert store.trim_exposures(first.cursor) == 1
    assert [e.request_id for e in store.read_exposures()] == ["req-2"]


def test_exposure_batches_keep_order_and_values(store):
    batch = [
        (f"u{i}", [f"a{i}-{j}" for j in range(i % 4)], T0 + timedelta(microseconds=7 * i + 1), f"req-{i}")
        for i in range(250)
    ]
    assert store.log_exposures(batch) == 250 and store.log_exposures([]) == 0
    read = store.read_exposures(limit=1000)
    assert [(e.user_id, list(e.article_ids), e.served_at, e.request_id) for e in read] == batch
    positions = [e.position for e in read]  # the ingestion asset's log positions come from these
    assert positions == sorted(set(positions)) and all(0 <= p < 2**53 for p in positions)


def test_record_view_counts_per_user_and_article(store):
    first = store.record_view("u1", "a1", T0)
    second = store.record_view("u1", "a1", T0 + timedelta(minutes=1))
    other = store.record_view("u1", "a2", T0 + timedelta(minutes=2))
    assert (first.view_count, second.view_count, other.view_count) == (1, 2, 1)
    assert second.first_viewed_at == T0 and second.last_viewed_at == T0 + timedelta(minutes=1)
    assert first.log_position < second.log_position < other.log_position


def test_record_view_is_safe_under_concurrency(store):
    def hammer():
        for _ in range(25):
            store.record_view("u1", "a1", T0)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.record_view("u1", "a1", T0).view_count == 101


# ------------------------------------------------------------------------------------------------
# failure modes


def test_sqlite_read_only_handle(tmp_path):
    SQLiteOnlineStore(tmp_path / "online.sqlite").put_recommendations(make_record("u1", T0))
    reader = SQLiteOnlineStore(tmp_path / "online.sqlite", read_only=True)
    assert reader.get_recommendations("u1") is not None
    with pytest.raises(ReadOnlyStore):
        reader.put_recommendations(make_record("u1", T0 + timedelta(hours=1)))
    reader.log_exposure("u1", ["x-0"], T0, "req")  # the log file stays writable
    assert len(reader.read_exposures()) == 1


def test_sqlite_missing_file_is_unavailable(tmp_path):
    reader = SQLiteOnlineStore(tmp_path / "nowhere.sqlite", read_only=True)
    with pytest.raises(StoreUnavailable):
        reader.ping()
    with pytest.raises(StoreUnavailable):
        reader.get_recommendations("u1")


def test_redis_unreachable_is_unavailable():
    store = RedisOnlineStore("redis://127.0.0.1:1/0", prefix="nowhere", socket_timeout=0.2)
    with pytest.raises(StoreUnavailable):
        store.ping()
    with pytest.raises(StoreUnavailable):
        store.get_recommendations("u1")


@requires_redis
def test_redis_read_path_survives_a_script_flush_and_a_killed_connection():
    """The read path keeps its own connection per thread: a Redis that lost its scripts gets the
    script again, and a connection killed under it fails one read as unavailable, then reconnects."""
    store = RedisOnlineStore(REDIS_URL, prefix=f"test-{uuid.uuid4().hex}")
    try:
        store.publish_batch([make_record("u1", T0, tag="a")])
        assert store.get_recommendations("u1").article_ids[0] == "a-0"
        store.client.script_flush()
        assert store.get_recommendations("u1").article_ids[0] == "a-0"
        reader = store._readers.connection
        reader.send_command("CLIENT", "ID")
        reader_id = reader.read_response()
        store.client.client_kill_filter(_id=reader_id)
        with pytest.raises(StoreUnavailable):
            store.get_recommendations("u1")
        assert store.get_recommendations("u1").article_ids[0] == "a-0"
        assert store.get_recommendations("nobody") is None
    finally:
        store.clear()
        store.close()


@requires_redis
def test_redis_async_reads_pair_each_reply_with_its_request_and_recover():
    """Concurrent reads on the one pipelined connection each get their own user's list; a lost
    script is loaded again; a killed connection fails the reads in flight as unavailable and the
    next read reconnects."""
    store = RedisOnlineStore(REDIS_URL, prefix=f"test-{uuid.uuid4().hex}")
    users = [f"u{i:03d}" for i in range(60)]
    store.publish_batch([make_record(user, T0, tag=user) for user in users])
    reads = store.async_reads()
    assert reads is not None

    async def scenario() -> None:
        lists = await asyncio.gather(*(reads.get_recommendations(user) for user in [*users, "nobody"]))
        assert [record.article_ids[0] for record in lists[:-1]] == [f"{user}-0" for user in users]
        assert lists[-1] is None
        store.client.script_flush()
        assert (await reads.get_recommendations("u001")).article_ids[0] == "u001-0"
        for client in store.client.client_list():
            if int(client["id"]) != store.client.client_id():
                store.client.client_kill_filter(_id=client["id"])
        with pytest.raises(StoreUnavailable):
            await reads.get_recommendations("u002")
        assert (await reads.get_recommendations("u002")).article_ids[0] == "u002-0"

    try:
        asyncio.run(scenario())
    finally:
        reads.close()
        store.clear()
        store.close()


def test_redis_async_reads_fail_as_unavailable_when_redis_does_not_answer():
    """A server that accepts and never replies, and a port nobody listens on."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    port = silent.getsockname()[1]
    store = RedisOnlineStore(f"redis://127.0.0.1:{port}/0", prefix="silent", socket_timeout=0.3)
    reads = store.async_reads()

    async def scenario() -> float:
        start = time.monotonic()
        with pytest.raises(StoreUnavailable, match="no reply within"):
            await reads.get_recommendations("u1")
        return time.monotonic() - start

    try:
        assert asyncio.run(scenario()) < 2.0
    finally:
        reads.close()
        silent.close()
    closed = RedisOnlineStore(f"redis://127.0.0.1:{port}/0", prefix="closed", socket_timeout=0.3)
    with pytest.raises(StoreUnavailable):
        asyncio.run(closed.async_reads().get_recommendations("u1"))


def test_exposures_ship_to_the_landing_zone_from_either_store(store, tmp_path):
    # The asset turns each exposure's `position` into change-record log positions; Redis stream
    # ids (`<ms>-<seq>`) are no integers themselves.
    import dagster as dg

    from newsrec_assets.defs.ingestion.assets import api_exposures
    from newsrec_assets.defs.resources import LandingZoneResource, OnlineStoreResource
    from newsrec_assets.domain.cdc import parse_change_line
    from newsrec_assets.resources.landing import LocalLandingZone

    store.log_exposures([("u1", ["a1", "a2"], T0, "req-1"), ("u2", ["a3"], T0, "req-2")])
    if isinstance(store, RedisOnlineStore):
        online = OnlineStoreResource(kind="redis", redis_url=REDIS_URL, redis_prefix=store.prefix)
    else:
        online = OnlineStoreResource(sqlite_path=str(store.path))
    landing = LandingZoneResource(root=str(tmp_path / "landing"))
    result = dg.materialize([api_exposures], resources={"landing": landing, "online_store": online})
    assert result.success
    zone = LocalLandingZone(tmp_path / "landing")
    records = [
        parse_change_line(line)
        for file in zone.list_files("impressions/")
        for line in zone.read_bytes(file.path).decode().splitlines()
    ]
    positions = [record.log_position for record in records]
    assert [record.payload["article_id"] for record in records] == ["a1", "a2", "a3"]
    assert positions == sorted(set(positions))
    assert store.read_exposures() == []  # trimmed once shipped
