"""HTTP API contract tests: TestClient against a real SQLite store file and a real Redis.

The app opens the store the way production does (SQLite read-only; Redis by URL and prefix);
the tests write through a second, writable handle, as the Dagster runs would. Redis cases skip
when no Redis answers at NEWSREC_TEST_REDIS_URL (default redis://127.0.0.1:6379/0).
"""

from __future__ import annotations

import os
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pytest
import redis
import uvicorn
from fastapi.testclient import TestClient

from newsrec_assets.domain.cdc import format_ts, parse_change_line
from newsrec_assets.domain.events import reconstruct_view_events
from newsrec_assets.resources.online_store import (
    ArticleMeta,
    ColdStartList,
    OnlineStore,
    RedisOnlineStore,
    SQLiteOnlineStore,
    StoreUnavailable,
    UserRecommendations,
)
from newsrec_assets.resources.online_store.base import from_us
from serving.core.config import Settings
from serving.core.http_protocol import CoalescingHTTPProtocol
from serving.core.metrics import Metrics
from serving.main import create_app
from serving.models import RecommendationsResponse
from serving.services.exposures import ProcessExposureLogger, ThreadExposureLogger
from serving.services.recommender import Recommender, Refreshing, ServingClock

REDIS_URL = os.environ.get("NEWSREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
API_KEY = "test-key-1"
DIM = 8
NOW = datetime.now(UTC).replace(microsecond=0)
COMPUTED_AT = NOW - timedelta(minutes=20)
WATERMARK = NOW - timedelta(minutes=25)


def redis_reachable() -> bool:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping()
    except redis.RedisError:
        return False
    return True


requires_redis = pytest.mark.skipif(not redis_reachable(), reason=f"no Redis answers at {REDIS_URL}")


@dataclass
class Api:
    client: TestClient
    store: OnlineStore  # the writer's handle
    settings: Settings


def unit(i: int) -> np.ndarray:
    vector = np.zeros(DIM, dtype=np.float32)
    vector[i] = 1.0
    return vector


def user_list(user_id: str, tag: str = "a", layer: str = "batch", model_version: str = "m1", **kw):
    """u's list: a000..a029 with scores 0.9 .. 0.0; its user vector points along axis 0."""
    fields = {
        "article_ids": [f"{tag}{i:03d}" for i in range(30)],
        "scores": np.linspace(0.9, 0.0, 30),
        "model_version": model_version,
        "layer": layer,
        "computed_at": COMPUTED_AT,
        "watermark": WATERMARK,
        "user_vector": unit(0),
    }
    fields.update(kw)
    return UserRecommendations(user_id=user_id, **fields)


def seed(store: OnlineStore) -> None:
    published = NOW - timedelta(hours=2)
    store.upsert_articles(
        ArticleMeta(
            f"a{i:03d}", f"Title {i}", "news", f"sub{i % 3}", published - timedelta(minutes=i), f"/a/{i}"
        )
        for i in range(40)
    )
    store.publish_batch([user_list(f"u{i:06d}") for i in range(1, 4)], model_version="m1")
    store.put_cold_start(
        ColdStartList([f"a{i:03d}" for i in range(39, 19, -1)], np.linspace(1, 0.05, 20), NOW, "m1")
    )


@contextmanager
def running_api(store: OnlineStore | None, settings: Settings) -> Iterator[Api]:
    """The app built from `settings`, behind a TestClient; `store` is the test's writable handle."""
    with TestClient(create_app(settings)) as client:
        yield Api(client=client, store=store, settings=settings)


def sqlite_settings(tmp_path: Path, **overrides) -> Settings:
    fields = {
        "store_backend": "sqlite",
        "sqlite_path": tmp_path / "online.sqlite",
        "landing_dir": tmp_path / "landing",
        "api_keys": [API_KEY, "other-key"],
        "fresh_refresh_seconds": 0,
        "cold_start_refresh_seconds": 0,
        "article_check_seconds": 0,
    }
    return Settings(**(fields | overrides))


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=requires_redis)])
def api(request, tmp_path) -> Iterator[Api]:
    if request.param == "sqlite":
        settings = sqlite_settings(tmp_path)
        store: OnlineStore = SQLiteOnlineStore(settings.sqlite_path)
        seed(store)
        with running_api(store, settings) as api:
            yield api
        store.close()
    else:
        prefix = f"test-{uuid.uuid4().hex}"
        settings = sqlite_settings(tmp_path, store_backend="redis", redis_url=REDIS_URL, redis_prefix=prefix)
        store = RedisOnlineStore(REDIS_URL, prefix=prefix)
        seed(store)
        try:
            with running_api(store, settings) as api:
                yield api
        finally:
            store.clear()
            store.close()


def assert_json_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


# ------------------------------------------------------------------------------------------------
# GET /v1/users/{user_id}/recommendations


def test_recommendations_contract(api):
    response = api.client.get("/v1/users/u000001/recommendations")

    assert response.status_code == 200
    body = RecommendationsResponse.model_validate(response.json())  # the documented shape
    assert body.user_id == "u000001" and body.k == 10 and len(body.items) == 10
    assert response.headers["x-request-id"] == body.request_id
    assert [item.rank for item in body.items] == list(range(1, 11))
    assert [item.article_id for item in body.items] == [f"a{i:03d}" for i in range(10)]
    first = body.items[0]
    assert (first.title, first.category, first.subcategory, first.url) == ("Title 0", "news", "sub0", "/a/0")
    assert first.score == pytest.approx(0.9) and first.source == "stored"
    scores = [item.score for item in body.items]
    assert scores == sorted(scores, reverse=True)
    provenance = body.provenance
    assert (provenance.model_version, provenance.layer, provenance.fresh_merged) == ("m1", "batch", 0)
    assert provenance.computed_at == COMPUTED_AT and provenance.watermark == WATERMARK


@pytest.mark.parametrize("k", [1, 7, 30, 50])
def test_k_within_bounds(api, k):
    body = api.client.get(f"/v1/users/u000002/recommendations?k={k}").json()
    assert body["k"] == k and len(body["items"]) == min(k, 30)  # the stored list holds 30


@pytest.mark.parametrize("k", ["0", "-1", "51", "1000", "ten", "1.5"])
def test_k_out_of_bounds_is_a_json_422(api, k):
    error = assert_json_error(
        api.client.get(f"/v1/users/u000001/recommendations?k={k}"), 422, "validation_error"
    )
    assert error["details"][0]["loc"] == ["query", "k"]


@pytest.mark.parametrize("user_id", ["bad%20id", "-leading-dash", "x" * 65, "u%2A1"])
def test_invalid_user_id_is_a_json_422(api, user_id):
    error = assert_json_error(api.client.get(f"/v1/users/{user_id}/recommendations"), 422, "validation_error")
    assert error["details"][0]["loc"] == ["path", "user_id"]


def test_unknown_user_gets_the_cold_start_list(api):
    response = api.client.get("/v1/users/u999999/recommendations?k=5")
    assert response.status_code == 200
    body = RecommendationsResponse.model_validate(response.json())
    assert [item.article_id for item in body.items] == ["a039", "a038", "a037", "a036", "a035"]
    assert {item.source for item in body.items} == {"cold_start"}
    assert body.provenance.layer == "cold_start" and body.provenance.watermark is None
    assert body.provenance.model_version == "m1"


def test_cold_start_without_a_stored_list_falls_back_to_the_newest_articles(tmp_path):
    settings = sqlite_settings(tmp_path)
    store = SQLiteOnlineStore(settings.sqlite_path)
    store.upsert_articles(
        [
            ArticleMeta("old", "Old", "news", "world", NOW - timedelta(days=1)),
            ArticleMeta("new", "New", "news", "world", NOW - timedelta(minutes=1)),
            ArticleMeta("future", "Embargoed", "news", "world", NOW + timedelta(hours=2)),
        ]
    )
    with running_api(store, settings) as api:
        body = api.client.get("/v1/users/u000001/recommendations").json()
        assert [item["article_id"] for item in body["items"]] == ["new", "old"]
        assert body["provenance"]["layer"] == "cold_start"


def test_speed_list_is_served_with_its_provenance(api):
    newer = WATERMARK + timedelta(minutes=10)
    speed = user_list(
        "u000001", tag="a", layer="speed", watermark=newer, computed_at=NOW, scores=np.linspace(0, 0.9, 30)
    )
    assert api.store.put_recommendations(speed).accepted
    body = api.client.get("/v1/users/u000001/recommendations?k=3").json()
    assert body["provenance"]["layer"] == "speed"
    assert body["provenance"]["watermark"] == newer.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert [item["article_id"] for item in body["items"]] == ["a000", "a001", "a002"]


def test_articles_published_after_computed_at_are_merged_in(api):
    api.store.upsert_articles(
        [
            ArticleMeta(
                "fresh-match", "Matches the user", "news", "world", COMPUTED_AT + timedelta(minutes=5)
            ),
            ArticleMeta("fresh-other", "Orthogonal", "news", "world", COMPUTED_AT + timedelta(minutes=6)),
            ArticleMeta(
                "fresh-old-model", "Old model vector", "news", "world", COMPUTED_AT + timedelta(minutes=7)
            ),
            ArticleMeta(
                "before", "Published before the list", "news", "world", COMPUTED_AT - timedelta(minutes=5)
            ),
        ]
    )
    api.store.put_article_vectors(
        ["fresh-match", "fresh-other", "before"], np.stack([unit(0) * 5, unit(1) * 5, unit(0) * 9]), "m1"
    )
    api.store.put_article_vectors(["fresh-old-model"], (unit(0) * 7)[None, :], "m0")

    body = api.client.get("/v1/users/u000001/recommendations?k=5").json()

    ids = [item["article_id"] for item in body["items"]]
    assert ids == ["fresh-match", "a000", "a001", "a002", "a003"]  # 5.0 beats the stored 0.9
    first = body["items"][0]
    assert first["source"] == "fresh" and first["score"] == pytest.approx(5.0)
    assert first["title"] == "Matches the user"
    assert {item["source"] for item in body["items"][1:]} == {"stored"}
    assert body["provenance"]["fresh_merged"] == 1
    # fresh-other scores 0 against the user vector: it ranks among the stored items, at the bottom.
    all_ids = [
        item["article_id"]
        for item in api.client.get("/v1/users/u000001/recommendations?k=50").json()["items"]
    ]
    assert "fresh-other" in all_ids and "fresh-old-model" not in all_ids and "before" not in all_ids


def test_unpublished_articles_are_skipped(api):
    api.store.delete_articles(["a000", "a002"])
    body = api.client.get("/v1/users/u000001/recommendations?k=4").json()
    assert [item["article_id"] for item in body["items"]] == ["a001", "a003", "a004", "a005"]
    assert [item["rank"] for item in body["items"]] == [1, 2, 3, 4]


def test_article_metadata_is_cached_until_the_articles_change(api, tmp_path):
    # The fixture checks the store's article revision on every request; this app checks it once a
    # minute, so it keeps serving what it cached until then.
    settings = api.settings.model_copy(update={"article_check_seconds": 60})
    with TestClient(create_app(settings)) as client:
        first = client.get("/v1/users/u000001/recommendations?k=4").json()
        assert store_calls(client, "get_articles") == 1
        assert client.get("/v1/users/u000002/recommendations?k=4").json()["items"] == first["items"]
        assert store_calls(client, "get_articles") == 1  # the same articles: served from the cache
        api.store.delete_articles(["a000"])
        still = client.get("/v1/users/u000001/recommendations?k=4").json()["items"]
        assert still[0]["article_id"] == "a000"  # within the check interval: stale by design
        client.app.state.recommender.articles._checked_at = float("-inf")  # the interval is over
        items = client.get("/v1/users/u000001/recommendations?k=4").json()["items"]
        assert [item["article_id"] for item in items] == ["a001", "a002", "a003", "a004"]


def store_calls(client: TestClient, operation: str) -> int:
    """How often the app called the online store for `operation` (its latency histogram's count)."""
    for family in client.app.state.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "newsrec_store_read_duration_seconds_count" and sample.labels == {
                "operation": operation
            }:
                return int(sample.value)
    return 0


@pytest.mark.parametrize("inline_store_reads", [True, False])
def test_fast_lane_answers_as_the_fastapi_route_does(api, inline_store_reads):
    """Well-formed requests are answered by the fast lane, the rest by FastAPI; both answer alike."""
    routed = api.settings.model_copy(update={"fast_lane": False, "inline_store_reads": inline_store_reads})
    fast = api.settings.model_copy(update={"inline_store_reads": inline_store_reads})
    api.store.put_recommendations(user_list("u000002", layer="speed", watermark=NOW))
    api.store.upsert_articles(
        [ArticleMeta("fresh-1", "Fresh", "news", "sub0", COMPUTED_AT + timedelta(minutes=1))]
    )
    api.store.put_article_vectors(["fresh-1"], np.array([unit(0) * 0.88]), "m1")
    paths = [
        "/v1/users/u000001/recommendations",
        "/v1/users/u000002/recommendations?k=3",  # speed list, fresh article merged in
        "/v1/users/u999999/recommendations?k=50",  # cold start
        "/v1/users/u000001/recommendations?k=51",  # k > max_k: FastAPI's 422
        "/v1/users/u000001/recommendations?k=05",  # not a plain number: FastAPI parses it
        "/v1/users/u000001/recommendations?k=4&debug=1",  # another parameter: FastAPI ignores it
        "/v1/users/bad%20id/recommendations",
        "/v1/users/u000001/recommendations/",
    ]
    with TestClient(create_app(routed)) as slow_client, TestClient(create_app(fast)) as fast_client:
        for path in paths:
            expected, got = slow_client.get(path), fast_client.get(path)
            assert got.status_code == expected.status_code, path
            assert got.headers["content-type"] == expected.headers["content-type"], path
            if expected.status_code != 200:
                assert got.json() == expected.json(), path
                continue
            assert got.headers["x-request-id"] == got.json()["request_id"]
            ignore = {"request_id": None, "served_at": None}
            assert got.json() | ignore == expected.json() | ignore, path
        assert store_calls(fast_client, "get_recommendations") == store_calls(
            slow_client, "get_recommendations"
        )
        fresh = fast_client.get("/v1/users/u000002/recommendations?k=3").json()
        assert [item["source"] for item in fresh["items"]] == ["stored", "fresh", "stored"]


def test_fast_lane_store_failure_is_a_json_503(tmp_path):
    with running_api(None, sqlite_settings(tmp_path, fast_lane=True)) as api:
        response = api.client.get("/v1/users/u000001/recommendations?k=3")
        assert_json_error(response, 503, "store_unavailable")
        assert response.headers["retry-after"] == "1"
        text = api.client.get("/metrics").text
        assert 'route="/v1/users/{user_id}/recommendations",status="503"} 1.0' in text


def test_fast_lane_unexpected_error_is_the_json_500_fastapi_gives(api):
    def broken(*args, **kwargs):
        raise RuntimeError("bug")

    recommender = api.client.app.state.recommender
    recommender.recommend = recommender.recommend_async = broken
    with TestClient(
        create_app(api.settings.model_copy(update={"fast_lane": False})), raise_server_exceptions=False
    ) as routed:
        routed.app.state.recommender.recommend = routed.app.state.recommender.recommend_async = broken
        expected = routed.get("/v1/users/u000001/recommendations")
    got = api.client.get("/v1/users/u000001/recommendations")
    assert_json_error(got, 500, "internal_error")
    assert got.json() == expected.json() and expected.status_code == 500
    text = api.client.get("/metrics").text
    assert 'route="/v1/users/{user_id}/recommendations",status="500"} 1.0' in text


def test_served_lists_are_logged_as_exposures(api):
    writer = api.client.app.state.exposures
    assert isinstance(writer, ProcessExposureLogger)  # the default writer
    assert writer._process is not None  # started with the app, before the first request
    body = api.client.get("/v1/users/u000003/recommendations?k=3").json()
    api.client.app.state.exposures.flush()  # handed over in batches; flush waits until written
    exposures = api.store.read_exposures()
    assert len(exposures) == 1
    exposure = exposures[0]
    assert exposure.request_id == body["request_id"] and exposure.user_id == "u000003"
    assert list(exposure.article_ids) == [item["article_id"] for item in body["items"]]


def test_a_store_handed_to_the_app_gets_its_exposures_from_a_thread(tmp_path):
    """A store object cannot be reopened in a writer process: the app writes it from a thread."""
    settings = sqlite_settings(tmp_path)
    store = SQLiteOnlineStore(settings.sqlite_path)
    seed(store)
    try:
        with TestClient(create_app(settings, store=store)) as client:
            assert isinstance(client.app.state.exposures, ThreadExposureLogger)
            body = client.get("/v1/users/u000001/recommendations?k=2").json()
            client.app.state.exposures.flush()
            assert [e.request_id for e in store.read_exposures()] == [body["request_id"]]
    finally:
        store.close()


def test_the_api_answers_alike_through_the_coalescing_http_protocol(tmp_path):
    """A real uvicorn server on a socket, with the protocol the API is deployed with: the fast
    lane, a FastAPI route and an error answer as through the TestClient."""
    settings = sqlite_settings(tmp_path, log_exposures=False)
    store = SQLiteOnlineStore(settings.sqlite_path)
    seed(store)
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, http=CoalescingHTTPProtocol)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        port = server.servers[0].sockets[0].getsockname()[1]  # bound to port 0: the OS chose

        def get(path: str) -> tuple[int, dict]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                    return response.status, orjson.loads(response.read())
            except urllib.error.HTTPError as error:
                return error.code, orjson.loads(error.read())

        with TestClient(create_app(settings)) as client:
            route = "/v1/users/u000002/recommendations"
            for path in (f"{route}?k=4", "/healthz", f"{route}?k=0"):
                status, body = get(path)
                expected = client.get(path)
                assert status == expected.status_code
                assert drop_per_request_fields(body) == drop_per_request_fields(expected.json())
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        store.close()


def drop_per_request_fields(body: dict) -> dict:
    """A response without what differs between two requests for the same thing."""
    return {key: value for key, value in body.items() if key not in ("request_id", "served_at")}


def test_serving_clock_text_is_format_ts(monkeypatch):
    clock = ServingClock()
    for micros in [
        1_700_000_000_123_456,
        1_700_000_000_999_999,
        1_700_000_001_000_000,
        1_700_000_001_000_999,
    ]:
        monkeypatch.setattr(time, "time_ns", lambda micros=micros: micros * 1000)
        assert clock.now() == (micros, format_ts(from_us(micros)))


def test_readers_see_one_generation_flip_during_a_publish(api):
    users = [f"p{i:04d}" for i in range(120)]
    api.store.publish_batch([user_list(u, model_version="gen1") for u in users], model_version="gen1")
    stop, seen, errors = threading.Event(), [], []

    def poll():
        while not stop.is_set():
            for user in users[::7]:
                response = api.client.get(f"/v1/users/{user}/recommendations?k=1")
                if response.status_code != 200:
                    errors.append(response.status_code)
                seen.append(response.json()["provenance"]["model_version"])

    def slow_generation():
        for i, user in enumerate(users):
            if i % 10 == 0:
                time.sleep(0.02)
            yield user_list(user, model_version="gen2", watermark=WATERMARK + timedelta(minutes=30))

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        time.sleep(0.1)
        api.store.publish_batch(slow_generation(), model_version="gen2", chunk_size=10)
        time.sleep(0.1)
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert "gen1" in seen and "gen2" in seen
    assert sum(1 for a, b in zip(seen, seen[1:], strict=False) if a != b) == 1


def test_speed_write_racing_a_batch_publish_is_what_the_api_serves(api):
    def batch():  # computed from events up to WATERMARK + 5 min
        yield user_list("u000001", tag="a", watermark=WATERMARK + timedelta(minutes=5))
        speed = user_list(
            "u000001", layer="speed", watermark=WATERMARK + timedelta(minutes=6), computed_at=NOW
        )
        assert api.store.put_recommendations(speed).accepted  # lands mid-publish
        yield user_list("u000002", tag="a", watermark=WATERMARK + timedelta(minutes=5))

    assert api.store.publish_batch(batch(), chunk_size=1).published
    assert api.client.get("/v1/users/u000001/recommendations").json()["provenance"]["layer"] == "speed"
    assert api.client.get("/v1/users/u000002/recommendations").json()["provenance"]["layer"] == "batch"


# ------------------------------------------------------------------------------------------------
# POST /v1/events


def landed_files(settings: Settings) -> list[Path]:
    return sorted((settings.landing_dir / "user_article_views").rglob("*"))


def test_event_requires_an_api_key(api):
    event = {"user_id": "u000001", "article_id": "a001"}
    assert_json_error(api.client.post("/v1/events", json=event), 401, "unauthorized")
    response = api.client.post("/v1/events", json=event, headers={"X-API-Key": "wrong"})
    assert_json_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "ApiKey"
    assert not landed_files(api.settings)


def test_events_land_as_user_article_views_change_records(api):
    headers = {"X-API-Key": API_KEY}
    viewed_at = NOW - timedelta(minutes=3)
    first = api.client.post(
        "/v1/events",
        json={
            "user_id": "u000001",
            "article_id": "a007",
            "viewed_at": viewed_at.isoformat(),
            "impression_id": "req1",
        },
        headers=headers,
    )
    second = api.client.post(
        "/v1/events", json={"user_id": "u000001", "article_id": "a007"}, headers={"X-API-Key": "other-key"}
    )

    assert first.status_code == 202 and second.status_code == 202, (first.text, second.text)
    assert first.json()["view_count"] == 1 and second.json()["view_count"] == 2
    files = [path for path in landed_files(api.settings) if path.is_file()]
    assert len(files) == 2 and all(path.suffix == ".jsonl" and path.name.startswith("api-") for path in files)
    assert not [path for path in files if path.name.startswith(".")]  # no temporary files left

    for path in files:  # <landing>/user_article_views/<YYYY-MM-DD of the change>/api-*.jsonl
        record = parse_change_line(path.read_text())
        assert path.parent.name == f"{record.source_timestamp:%Y-%m-%d}"
    records = sorted((parse_change_line(p.read_text().strip()) for p in files), key=lambda r: r.log_position)
    assert [r.change_type for r in records] == ["INSERT", "UPDATE-INSERT"]
    assert [r.payload["view_count"] for r in records] == [1, 2]
    assert {r.table for r in records} == {"user_article_views"} and {r.log_file for r in records} == {
        "api-events"
    }
    assert records[0].payload["last_viewed_at"] == viewed_at
    assert records[0].payload["last_impression_id"] == "req1"
    assert records[1].payload["first_viewed_at"] == viewed_at
    landed = api.settings.landing_dir / first.json()["landing_file"]
    assert parse_change_line(landed.read_text()).change_key == first.json()["change_key"]
    assert first.json()["change_key"] == records[0].change_key

    events = reconstruct_view_events(records)
    assert [(e.user_id, e.article_id, e.view_number) for e in events] == [
        ("u000001", "a007", 1),
        ("u000001", "a007", 2),
    ]


@pytest.mark.parametrize(
    "event",
    [
        {"user_id": "u000001"},
        {"user_id": "u 1", "article_id": "a001"},
        {"user_id": "u000001", "article_id": "a" * 65},
        {"user_id": "u000001", "article_id": "a001", "viewed_at": "yesterday"},
        {"user_id": "u000001", "article_id": "a001", "viewed_at": (NOW + timedelta(hours=1)).isoformat()},
        {"user_id": "u000001", "article_id": "a001", "surprise": 1},
        ["u000001", "a001"],
    ],
)
def test_invalid_events_are_a_json_422(api, event):
    response = api.client.post("/v1/events", json=event, headers={"X-API-Key": API_KEY})
    assert assert_json_error(response, 422, "validation_error")["details"]
    assert not landed_files(api.settings)


def test_unwritable_landing_zone_is_a_json_503(tmp_path):
    (tmp_path / "landing").write_text("a file where the landing folder should be")
    settings = sqlite_settings(tmp_path)
    with running_api(SQLiteOnlineStore(settings.sqlite_path), settings) as api:
        response = api.client.post(
            "/v1/events", json={"user_id": "u1", "article_id": "a1"}, headers={"X-API-Key": API_KEY}
        )
        assert_json_error(response, 503, "service_unavailable")


def test_malformed_json_is_a_json_422(api):
    response = api.client.post(
        "/v1/events", content=b"{not json", headers={"X-API-Key": API_KEY, "Content-Type": "application/json"}
    )
    assert_json_error(response, 422, "validation_error")


# ------------------------------------------------------------------------------------------------
# health, readiness, metrics, errors


def test_health_and_readiness(api):
    assert api.client.get("/healthz").json() == {"status": "ok"}
    ready = api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready" and ready.json()["model_version"] == "m1"


def test_not_ready_without_a_model_version(tmp_path):
    settings = sqlite_settings(tmp_path)
    store = SQLiteOnlineStore(settings.sqlite_path)
    with running_api(store, settings) as api:
        assert_json_error(api.client.get("/readyz"), 503, "not_ready")
        assert api.client.get("/healthz").status_code == 200


def test_missing_sqlite_store_is_a_json_503(tmp_path):
    with running_api(None, sqlite_settings(tmp_path)) as api:  # nobody created the store file
        response = api.client.get("/v1/users/u000001/recommendations")
        assert_json_error(response, 503, "store_unavailable")
        assert response.headers["retry-after"] == "1"
        assert_json_error(api.client.get("/readyz"), 503, "store_unavailable")


def test_unreachable_redis_is_a_json_503(tmp_path):
    settings = sqlite_settings(tmp_path, store_backend="redis", redis_url="redis://127.0.0.1:1/0")
    with running_api(None, settings) as api:
        assert_json_error(api.client.get("/v1/users/u000001/recommendations"), 503, "store_unavailable")
        response = api.client.post(
            "/v1/events", json={"user_id": "u1", "article_id": "a1"}, headers={"X-API-Key": API_KEY}
        )
        assert_json_error(response, 503, "store_unavailable")


def test_openapi_documents_the_routes(api):
    paths = api.client.get("/openapi.json").json()["paths"]
    assert {"/v1/users/{user_id}/recommendations", "/v1/events", "/healthz", "/readyz"} <= set(paths)


def test_unknown_route_is_a_json_404(api):
    assert_json_error(api.client.get("/v1/nothing"), 404, "not_found")
    assert_json_error(api.client.delete("/v1/users/u000001/recommendations"), 405, "method_not_allowed")


def test_metrics(api):
    api.client.get("/v1/users/u000001/recommendations")
    api.client.get("/v1/users/u999999/recommendations")
    api.client.get("/v1/users/u000001/recommendations?k=0")
    text = api.client.get("/metrics").text
    route = 'route="/v1/users/{user_id}/recommendations"'
    assert f'newsrec_http_requests_total{{method="GET",{route},status="200"}} 2.0' in text
    assert f'newsrec_http_requests_total{{method="GET",{route},status="422"}} 1.0' in text
    assert f'newsrec_http_request_duration_seconds_count{{method="GET",{route}}} 3.0' in text
    assert 'newsrec_store_read_duration_seconds_count{operation="get_recommendations"} 2.0' in text
    assert 'newsrec_recommendations_served_total{layer="cold_start"} 1.0' in text
    assert "u000001" not in text  # raw paths never become labels


def test_refreshing_cache_serves_stale_values_while_reloading_in_the_background():
    loads = []
    fail = threading.Event()

    def load(previous):
        if fail.is_set():
            raise StoreUnavailable("down")
        assert previous == (len(loads) or None)  # the value it replaces
        loads.append(time.monotonic())
        return len(loads)

    cache = Refreshing(load, max_age_s=0.05)
    assert cache.get() == 1 and cache.get() == 1  # loaded once, then cached
    time.sleep(0.06)
    assert cache.get() == 1  # stale: returned at once, reloaded in the background
    deadline = time.monotonic() + 2
    while cache.get() != 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cache.get() == 2
    fail.set()
    time.sleep(0.06)
    cache.get()
    time.sleep(0.1)
    assert cache.get() == 2  # a failed reload keeps the previous value

    never_loaded = Refreshing(load, max_age_s=5)
    with pytest.raises(StoreUnavailable):
        never_loaded.get()


def test_settings_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NEWSREC_STORE_BACKEND", "redis")
    monkeypatch.setenv("NEWSREC_API_KEYS", "k1, k2,")
    monkeypatch.setenv("NEWSREC_LANDING_DIR", str(tmp_path))
    monkeypatch.setenv("NEWSREC_HOME", str(tmp_path / "home"))
    settings = Settings()
    assert settings.sqlite_path == tmp_path / "home" / "online_store.sqlite"  # the pipeline's file
    assert settings.store_backend == "redis" and settings.api_keys == ["k1", "k2"]
    assert settings.landing_dir == tmp_path and (settings.default_k, settings.max_k) == (10, 50)
    assert "k1" not in repr(settings)
    monkeypatch.setenv("NEWSREC_DEFAULT_K", "60")
    with pytest.raises(ValueError):
        Settings()


def test_fresh_vectors_reload_incrementally_between_whole_loads(tmp_path):
    """Between whole loads, a reload adds only what was published since the newest article held
    (including another article of that same microsecond) and drops what left the window; a new
    model version or the full-reload interval loads everything again."""
    store = SQLiteOnlineStore(tmp_path / "online.sqlite")
    settings = sqlite_settings(tmp_path, fresh_full_reload_seconds=3600)
    recommender = Recommender(store, settings, Metrics())
    # The window is measured from the real clock when the snapshot loads: anchor the articles to
    # it here, not to the module's NOW, which a slow run of the tests before this one leaves behind.
    now = datetime.now(UTC)
    base = now - timedelta(hours=1)

    def publish(article_id: str, published_at: datetime, vector: np.ndarray, version: str = "m1") -> None:
        store.upsert_articles([ArticleMeta(article_id, article_id, "news", "sub0", published_at)])
        store.put_article_vectors([article_id], np.array([vector]), version)

    store.set_model_version("m1")
    publish("old", now - timedelta(hours=settings.fresh_window_hours + 1), unit(0))  # outside the window
    publish("f1", base, unit(1))
    publish("f2", base + timedelta(minutes=1), unit(2))
    first = recommender._load_fresh(None)
    assert first.article_ids == ["f1", "f2"]

    publish("f3", base + timedelta(minutes=1), unit(3))  # the same microsecond as the newest held
    publish("f4", base + timedelta(minutes=2), unit(4))
    calls_before = store_calls_of(recommender, "get_fresh_articles")
    second = recommender._load_fresh(first)
    assert second.article_ids == ["f1", "f2", "f3", "f4"] and second.full_at == first.full_at
    assert second.published_at_us == sorted(second.published_at_us)
    assert np.array_equal(second.vectors, np.array([unit(1), unit(2), unit(3), unit(4)]))
    assert store_calls_of(recommender, "get_fresh_articles") == calls_before + 1
    assert recommender._load_fresh(second) is second  # nothing new: the same snapshot

    # f1 leaves the window when the window shrinks below its age.
    narrow = recommender.settings.model_copy(update={"fresh_window_hours": 1.0 - 1 / 120})
    recommender.settings = narrow
    assert recommender._load_fresh(second).article_ids == ["f2", "f3", "f4"]

    store.set_model_version("m2")
    publish("g1", base + timedelta(minutes=3), unit(5), version="m2")
    assert recommender._load_fresh(second).article_ids == ["g1"]  # a new model: a whole load
    store.close()


def store_calls_of(recommender: Recommender, operation: str) -> int:
    value = recommender.metrics.registry.get_sample_value(
        "newsrec_store_read_duration_seconds_count", {"operation": operation}
    )
    return int(value or 0)
