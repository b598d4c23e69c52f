"""HTTP API contract tests: TestClient against a real SQLite store file and a real Redis.

The app opens the store the way production does (SQLite read-only; Redis by URL and prefix);
the tests write through a second, writable handle, as the Dagster runs would. Redis cases skip
when no Redis answers at NEWSREC_TEST_REDIS_URL (default redis://127.0.0.1:6379/0).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from newsrec_assets.domain.cdc import parse_change_line
from newsrec_assets.domain.ranking import assign_variant
from newsrec_assets.resources.online_store.base import (
    ArticleCache,
    ArticleMeta,
    ColdStartList,
    ListStore,
    StoreUnavailable,
    UserRecommendations,
)
from newsrec_assets.resources.online_store.redis import RedisArticleCache, RedisListStore
from newsrec_assets.resources.online_store.sqlite import SQLiteArticleCache, SQLiteListStore
from serving.core.config import Settings, Variant
from serving.main import create_app
from serving.models import RecommendationsResponse, RelatedResponse
from serving.services.recommender import Refreshing

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
    lists: ListStore  # the writers' handles, as the Dagster runs hold them
    articles: ArticleCache
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


def seed(lists: ListStore, articles: ArticleCache) -> None:
    published = NOW - timedelta(hours=2)
    articles.upsert_articles(
        ArticleMeta(
            f"a{i:03d}", f"Title {i}", "news", f"sub{i % 3}", published - timedelta(minutes=i), f"/a/{i}"
        )
        for i in range(40)
    )
    lists.publish_batch([user_list(f"u{i:06d}") for i in range(1, 4)], model_version="m1")
    lists.put_cold_start(
        ColdStartList([f"a{i:03d}" for i in range(39, 19, -1)], np.linspace(1, 0.05, 20), NOW, "m1")
    )


def sqlite_settings(tmp_path: Path, **overrides) -> Settings:
    fields = {
        "store_backend": "sqlite",
        "sqlite_path": tmp_path / "online.sqlite",
        "landing_kind": "local",
        "landing_dir": tmp_path / "landing",
        "api_keys": [API_KEY, "other-key"],
        "api_docs": True,
        "fresh_refresh_seconds": 0,
        "cold_start_refresh_seconds": 0,
        "article_check_seconds": 0,
        "events_window_seconds": 0.01,
        "exposure_window_seconds": 0.05,
    }
    return Settings(**(fields | overrides))


def sqlite_stores(settings: Settings) -> tuple[ListStore, ArticleCache]:
    return SQLiteListStore(settings.sqlite_path), SQLiteArticleCache(settings.sqlite_path)


@contextmanager
def running_api(settings: Settings, lists=None, articles=None) -> Iterator[Api]:
    """The app built from `settings`, behind a TestClient."""
    with TestClient(create_app(settings)) as client:
        yield Api(client=client, lists=lists, articles=articles, settings=settings)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=requires_redis)])
def api(request, tmp_path) -> Iterator[Api]:
    if request.param == "sqlite":
        settings = sqlite_settings(tmp_path)
        lists, articles = sqlite_stores(settings)
    else:
        prefix = f"test-{uuid.uuid4().hex}"
        settings = sqlite_settings(tmp_path, store_backend="redis", redis_url=REDIS_URL, redis_prefix=prefix)
        lists, articles = (
            RedisListStore(REDIS_URL, prefix=prefix),
            RedisArticleCache(REDIS_URL, prefix=prefix),
        )
    seed(lists, articles)
    try:
        with running_api(settings, lists, articles) as api:
            yield api
    finally:
        if isinstance(lists, RedisListStore):
            lists.clear()
        lists.close()
        articles.close()


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
    assert response.json() == json.loads(body.model_dump_json())  # all of it, and nothing else
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


def test_a_serving_app_keeps_its_start_up_objects_out_of_garbage_collection(tmp_path):
    settings = sqlite_settings(tmp_path)
    seed(*sqlite_stores(settings))
    with running_api(settings) as api:
        assert gc.get_freeze_count() > 10_000  # the modules, schemas and app alive at start-up
        assert api.client.get("/v1/users/u000001/recommendations").status_code == 200
    assert gc.get_freeze_count() == 0  # unfrozen at shutdown: a stopped app leaves nothing uncollectable


def test_cold_start_without_a_stored_list_falls_back_to_the_newest_articles(tmp_path):
    settings = sqlite_settings(tmp_path)
    _, articles = sqlite_stores(settings)
    articles.upsert_articles(
        [
            ArticleMeta("old", "Old", "news", "world", NOW - timedelta(days=1)),
            ArticleMeta("new", "New", "news", "world", NOW - timedelta(minutes=1)),
            ArticleMeta("future", "Embargoed", "news", "world", NOW + timedelta(hours=2)),
        ]
    )
    with running_api(settings) as api:
        body = api.client.get("/v1/users/u000001/recommendations").json()
        assert [item["article_id"] for item in body["items"]] == ["new", "old"]
        assert body["provenance"]["layer"] == "cold_start"


def test_speed_list_is_served_with_its_provenance(api):
    newer = WATERMARK + timedelta(minutes=10)
    speed = user_list(
        "u000001", tag="a", layer="speed", watermark=newer, computed_at=NOW, scores=np.linspace(0, 0.9, 30)
    )
    assert api.lists.put_recommendations(speed).accepted
    body = api.client.get("/v1/users/u000001/recommendations?k=3").json()
    assert body["provenance"]["layer"] == "speed"
    assert datetime.fromisoformat(body["provenance"]["watermark"]) == newer
    assert [item["article_id"] for item in body["items"]] == ["a000", "a001", "a002"]


def test_articles_published_after_computed_at_are_merged_in(api):
    api.articles.upsert_articles(
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
    api.articles.put_article_vectors(
        ["fresh-match", "fresh-other", "before"], np.stack([unit(0) * 5, unit(1) * 5, unit(0) * 9]), "m1"
    )
    api.articles.put_article_vectors(["fresh-old-model"], (unit(0) * 7)[None, :], "m0")

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
    api.articles.delete_articles(["a000", "a002"])
    body = api.client.get("/v1/users/u000001/recommendations?k=4").json()
    assert [item["article_id"] for item in body["items"]] == ["a001", "a003", "a004", "a005"]
    assert [item["rank"] for item in body["items"]] == [1, 2, 3, 4]


def test_category_and_subcategory_filters_and_offset_paging(api):
    def ids(query: str) -> list[str]:
        body = api.client.get(f"/v1/users/u000001/recommendations?{query}").json()
        assert [item["rank"] for item in body["items"]] == list(
            range(body["offset"] + 1, body["offset"] + 1 + len(body["items"]))
        )
        return [item["article_id"] for item in body["items"]]

    assert ids("k=3&subcategory=sub1") == ["a001", "a004", "a007"]
    assert ids("k=3&offset=3") == ["a003", "a004", "a005"]
    assert ids("k=2&offset=1&subcategory=sub2&category=news") == ["a005", "a008"]
    assert ids("k=3&category=sports") == []
    assert ids("k=5&offset=28") == ["a028", "a029"]  # the stored list ends at 30
    assert ids("k=3&subcategory=sub0&offset=1") == ids("k=4&subcategory=sub0")[1:]
    error = assert_json_error(api.client.get("/v1/users/u1/recommendations?offset=-1"), 422)
    assert error["details"][0]["loc"] == ["query", "offset"]


def test_filters_look_at_no_more_than_max_candidates(api):
    with TestClient(create_app(api.settings.model_copy(update={"max_candidates": 10}))) as client:
        body = client.get("/v1/users/u000001/recommendations?k=10&subcategory=sub1").json()
    assert [item["article_id"] for item in body["items"]] == ["a001", "a004", "a007"]  # of a000..a009


def with_variants(api: Api, **variants: Variant) -> TestClient:
    return TestClient(create_app(api.settings.model_copy(update={"variants": variants})))


def test_diversity_cap_moves_items_over_their_subcategory_cap_behind_the_rest(api):
    clustered = [f"a{i:03d}" for i in (0, 3, 6, 9, 1, 4, 7, 2, 5)]  # sub0 x4, sub1 x3, sub2 x2
    assert api.lists.put_recommendations(
        user_list("u000001", article_ids=clustered, scores=np.linspace(0.9, 0.1, 9), watermark=NOW)
    ).accepted
    with with_variants(api, capped=Variant(diversity_cap=2)) as client:
        body = client.get("/v1/users/u000001/recommendations?k=6").json()
        page = client.get("/v1/users/u000001/recommendations?k=3&offset=6").json()
    assert [item["article_id"] for item in body["items"]] == ["a000", "a003", "a001", "a004", "a002", "a005"]
    assert [item["article_id"] for item in page["items"]] == ["a006", "a009", "a007"]
    assert body["provenance"]["variant"] == "capped"
    plain = api.client.get("/v1/users/u000001/recommendations?k=6").json()  # the default: off
    assert [item["article_id"] for item in plain["items"]] == clustered[:6]


def test_variants_are_assigned_by_a_stable_hash_returned_and_logged_with_exposures(api):
    variants = {"a": Variant(weight=1), "b": Variant(weight=1, fresh_merge=False), "off": Variant(weight=0)}
    users = [f"u{i:06d}" for i in range(1, 41)]
    weights = {name: v.weight for name, v in variants.items()}
    with with_variants(api, **variants) as client:
        served = {
            user: client.get(f"/v1/users/{user}/recommendations?k=2").json()["provenance"]["variant"]
            for user in users
        }
        again = client.get("/v1/users/u000001/recommendations?k=2").json()["provenance"]["variant"]
    assert served == {user: assign_variant(user, weights) for user in users}
    assert set(served.values()) == {"a", "b"} and again == served["u000001"]
    records = [record for window in landed(api.settings, "served_lists") for record in window]
    logged = {record.payload["user_id"]: record.payload["variant"] for record in records}
    assert logged == served


def test_openapi_documents_the_variants_filters_paging_and_related_route(api):
    document = api.client.get("/openapi.json").json()
    parameters = document["paths"]["/v1/users/{user_id}/recommendations"]["get"]["parameters"]
    assert {"k", "offset", "category", "subcategory"} <= {p["name"] for p in parameters}
    assert "variant" in document["components"]["schemas"]["Provenance"]["properties"]
    related = document["paths"]["/v1/articles/{article_id}/related"]["get"]
    assert {"200", "404", "422"} <= set(related["responses"])


def test_related_articles_are_the_nearest_live_ones_by_vector(api):
    tilted = unit(0) * 0.9 + unit(1) * 0.1
    vectors = np.stack([unit(0) * 3, tilted, unit(0) * 0.5, unit(1), unit(2) + unit(0) * 0.2])
    api.articles.put_article_vectors(["a000", "a001", "a002", "a003", "a004"], vectors, "m1")
    api.articles.delete_articles(["a002"])  # no longer live: never related

    response = api.client.get("/v1/articles/a000/related?k=3")

    assert response.status_code == 200, response.text
    body = RelatedResponse.model_validate(response.json())
    assert response.json() == json.loads(body.model_dump_json())  # all of it, and nothing else
    assert [item.article_id for item in body.items] == ["a001", "a004", "a003"]
    assert body.items[0].score == pytest.approx(0.9 / np.hypot(0.9, 0.1), abs=1e-5)
    assert [item.rank for item in body.items] == [1, 2, 3] and body.model_version == "m1"
    assert_json_error(api.client.get("/v1/articles/a039/related"), 404, "not_found")  # no vector
    assert_json_error(api.client.get("/v1/articles/a000/related?k=0"), 422)


def test_article_metadata_is_cached_until_the_articles_change(api, tmp_path):
    # The fixture checks the store's article revision on every request; this app checks it once a
    # minute, so it keeps serving what it cached until then.
    settings = api.settings.model_copy(update={"article_check_seconds": 60})
    with TestClient(create_app(settings)) as client:
        first = client.get("/v1/users/u000001/recommendations?k=4").json()
        assert store_calls(client, "get_articles") == 1
        assert client.get("/v1/users/u000002/recommendations?k=4").json()["items"] == first["items"]
        assert store_calls(client, "get_articles") == 1  # the same articles: served from the cache
        api.articles.delete_articles(["a000"])
        still = client.get("/v1/users/u000001/recommendations?k=4").json()["items"]
        assert still[0]["article_id"] == "a000"  # within the check interval: stale by design
        client.app.state.recommender._revision._snapshot = None  # the interval is over
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


def test_readers_see_one_generation_flip_during_a_publish(api):
    users = [f"p{i:04d}" for i in range(120)]
    api.lists.publish_batch([user_list(u, model_version="gen1") for u in users], model_version="gen1")
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
        api.lists.publish_batch(slow_generation(), model_version="gen2", chunk_size=10)
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
        assert api.lists.put_recommendations(speed).accepted  # lands mid-publish
        yield user_list("u000002", tag="a", watermark=WATERMARK + timedelta(minutes=5))

    assert api.lists.publish_batch(batch(), chunk_size=1).published
    assert api.client.get("/v1/users/u000001/recommendations").json()["provenance"]["layer"] == "speed"
    assert api.client.get("/v1/users/u000002/recommendations").json()["provenance"]["layer"] == "batch"


# ------------------------------------------------------------------------------------------------
# exposures


def landed(settings: Settings, table: str) -> list:
    """The change records landed under `table`, one list per object."""
    return [
        [parse_change_line(line) for line in path.read_text().splitlines()]
        for path in sorted((settings.landing_dir / table).rglob("*.jsonl"))
    ]


def test_served_lists_land_as_one_record_each_one_object_per_window(api):
    settings = api.settings.model_copy(update={"exposure_window_seconds": 30})
    with TestClient(create_app(settings)) as client:  # one window: all four requests are in it
        bodies = [client.get(f"/v1/users/u00000{i}/recommendations?k=3").json() for i in (1, 2)]
        bodies.append(client.get("/v1/users/u000003/recommendations?k=2&offset=1").json())  # a page
        bodies.append(client.get("/v1/users/u999999/recommendations?k=2").json())  # cold start too
        assert not landed(settings, "served_lists")  # the window is still open
    (records,) = landed(settings, "served_lists")  # shutting down landed the window, as one object
    assert [record.payload["impression_id"] for record in records] == [body["request_id"] for body in bodies]
    for record, body in zip(records, bodies, strict=True):
        assert record.payload["article_ids"].split(" ") == [item["article_id"] for item in body["items"]]
        assert record.payload["first_position"] == body["items"][0]["rank"] - 1 == body["offset"]
        assert (record.payload["user_id"], record.payload["variant"], record.change_type) == (
            body["user_id"], body["provenance"]["variant"], "INSERT"
        )  # fmt: skip
    assert len({record.change_key for record in records}) == len(records)  # none deduplicated away
    assert not landed(settings, "impressions")


def test_a_full_exposure_queue_drops_and_counts_without_failing_requests(tmp_path):
    settings = sqlite_settings(tmp_path, exposure_queue_size=2, exposure_window_seconds=30)
    seed(*sqlite_stores(settings))
    with running_api(settings) as api:
        for _ in range(5):
            assert api.client.get("/v1/users/u000001/recommendations?k=2").status_code == 200
        dropped = api.client.app.state.metrics.registry.get_sample_value("newsrec_exposures_dropped_total")
        assert dropped == 3


# ------------------------------------------------------------------------------------------------
# POST /v1/events


def landed_files(settings: Settings) -> list[Path]:
    return sorted((settings.landing_dir / "api_view_events").rglob("*"))


def test_event_requires_an_api_key(api):
    event = {"user_id": "u000001", "article_id": "a001"}
    assert_json_error(api.client.post("/v1/events", json=event), 401, "unauthorized")
    response = api.client.post("/v1/events", json=event, headers={"X-API-Key": "wrong"})
    assert_json_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "ApiKey"
    assert not landed_files(api.settings)


def test_events_land_as_api_view_events_inserts_each_with_its_own_id(api):
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
    assert "view_count" not in first.json()
    files = [path for path in landed_files(api.settings) if path.is_file()]
    assert len(files) == 2 and all(path.suffix == ".jsonl" and path.name.startswith("api-") for path in files)
    assert not [path for path in files if path.name.startswith(".")]  # no temporary files left

    for path in files:  # <landing>/api_view_events/<YYYY-MM-DD of the change>/api-*.jsonl
        record = parse_change_line(path.read_text())
        assert path.parent.name == f"{record.source_timestamp:%Y-%m-%d}"
    records = sorted((parse_change_line(p.read_text().strip()) for p in files), key=lambda r: r.log_position)
    assert [r.change_type for r in records] == ["INSERT", "INSERT"]
    assert {r.table for r in records} == {"api_view_events"}
    (log_file,) = {r.log_file for r in records}  # this process's own log, at running positions
    assert re.fullmatch(r"api-events-[0-9a-f]{16}", log_file)
    assert records[1].log_position == records[0].log_position + 1
    assert [r.payload["event_id"] for r in records] == [first.json()["event_id"], second.json()["event_id"]]
    assert all(re.fullmatch(r"[0-9a-f]{32}", r.payload["event_id"]) for r in records)
    assert records[0].payload["viewed_at"] == viewed_at
    assert records[0].payload["impression_id"] == "req1" and records[1].payload["impression_id"] is None
    landed = api.settings.landing_dir / first.json()["landing_file"]
    assert parse_change_line(landed.read_text()).change_key == first.json()["change_key"]
    assert first.json()["change_key"] == records[0].change_key
    assert first.json()["viewed_at"].startswith(f"{viewed_at:%Y-%m-%dT%H:%M:%S}")


def test_two_api_processes_never_share_a_change_key(tmp_path):
    """Each process (worker, restart) writes its own log: their change keys never meet, even for
    events of the same window's timestamp."""
    settings = sqlite_settings(tmp_path)
    keys = []
    for _ in range(2):
        with running_api(settings) as api:
            for _ in range(3):
                event = {"user_id": "u1", "article_id": "a1"}
                keys.append(api.client.post("/v1/events", json=event, headers={"X-API-Key": API_KEY}).json())
    assert len({answer["change_key"] for answer in keys}) == len({answer["event_id"] for answer in keys}) == 6


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


def test_unwritable_landing_zone_is_a_json_503_and_lands_nothing(tmp_path):
    (tmp_path / "landing").write_text("a file where the landing folder should be")
    settings = sqlite_settings(tmp_path)
    event = {"user_id": "u1", "article_id": "a1"}
    with running_api(settings) as api:
        response = api.client.post("/v1/events", json=event, headers={"X-API-Key": API_KEY})
        assert_json_error(response, 503, "service_unavailable")
        assert response.headers["retry-after"] == "1"
    (tmp_path / "landing").unlink()
    with running_api(settings) as api:  # the landing zone is back: the retried view lands once
        response = api.client.post("/v1/events", json=event, headers={"X-API-Key": API_KEY})
        assert response.status_code == 202
    ((record,),) = landed(settings, "api_view_events")
    assert record.payload["event_id"] == response.json()["event_id"]


def test_an_event_is_acknowledged_only_once_its_window_is_written(tmp_path):
    """Group commit: concurrent events share one landing object, and none is answered before the
    object is written."""
    settings = sqlite_settings(tmp_path, events_window_seconds=0.2)
    with running_api(settings) as api:
        zone = api.client.app.state.stores.landing
        release, writes, real_write = threading.Event(), [], zone.write_file

        def held_write(path: str, content: bytes) -> None:
            assert release.wait(30)
            real_write(path, content)
            writes.append(path)

        zone.write_file = held_write
        answers: list = []

        def post(i: int) -> None:
            event = {"user_id": f"u{i}", "article_id": "a1"}
            response = api.client.post("/v1/events", json=event, headers={"X-API-Key": API_KEY})
            answers.append((list(writes), response))  # what was written when the answer came

        threads = [threading.Thread(target=post, args=(i,)) for i in range(5)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # every request is in, its window is being written (and held)
        assert not answers
        release.set()
        for thread in threads:
            thread.join(30)
    assert len(writes) == 1 and len(answers) == 5
    assert all(written == writes for written, _ in answers)
    assert {response.status_code for _, response in answers} == {202}
    (records,) = landed(settings, "api_view_events")
    assert sorted(record.payload["user_id"] for record in records) == [f"u{i}" for i in range(5)]
    assert {response.json()["landing_file"] for _, response in answers} == set(writes)


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
    sqlite_stores(settings)
    with running_api(settings) as api:
        assert_json_error(api.client.get("/readyz"), 503, "not_ready")
        assert api.client.get("/healthz").status_code == 200


def test_missing_sqlite_store_is_a_json_503(tmp_path):
    with running_api(sqlite_settings(tmp_path)) as api:  # nobody created the store file
        response = api.client.get("/v1/users/u000001/recommendations")
        assert_json_error(response, 503, "store_unavailable")
        assert response.headers["retry-after"] == "1"
        assert_json_error(api.client.get("/readyz"), 503, "store_unavailable")


def test_unreachable_redis_is_a_json_503(tmp_path):
    settings = sqlite_settings(tmp_path, store_backend="redis", redis_url="redis://127.0.0.1:1/0")
    with running_api(settings) as api:
        assert_json_error(api.client.get("/v1/users/u000001/recommendations"), 503, "store_unavailable")
        response = api.client.post(
            "/v1/events", json={"user_id": "u1", "article_id": "a1"}, headers={"X-API-Key": API_KEY}
        )
        assert response.status_code == 202  # a view needs the landing zone only, never the store
    assert len(landed(settings, "api_view_events")) == 1


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

    def load():
        if fail.is_set():
            raise StoreUnavailable("down")
        loads.append(time.monotonic())
        return len(loads)

    cache = Refreshing(load, max_age_s=0.05, name="test")
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

    never_loaded = Refreshing(load, max_age_s=5, name="test")
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


def test_the_environment_picks_the_production_profile_and_explicit_settings_win(monkeypatch):
    monkeypatch.setenv("NEWSREC_ENV", "prod")
    monkeypatch.setenv("NEWSREC_LANDING_BUCKET", "landing-bucket")
    monkeypatch.setenv("NEWSREC_REDIS_URL", "redis://:secret@redis.internal:6379/0")
    settings = Settings()
    assert (settings.store_backend, settings.landing_kind, settings.api_docs) == ("redis", "gcs", False)
    assert not settings.demo_page and list(settings.variants) == ["default"]
    assert settings.landing_bucket == "landing-bucket" and "secret" not in repr(settings)
    monkeypatch.setenv("NEWSREC_API_DOCS", "true")
    assert Settings().api_docs
    monkeypatch.setenv("NEWSREC_ENV", "local")
    monkeypatch.delenv("NEWSREC_API_DOCS")
    local = Settings()
    assert (local.store_backend, local.landing_kind, local.api_docs) == ("sqlite", "local", True)
    assert local.demo_page
    monkeypatch.setenv("NEWSREC_VARIANTS", '{"a": {"weight": 2}, "b": {"diversity_cap": 2}}')
    assert Settings().variants == {"a": Variant(weight=2), "b": Variant(diversity_cap=2)}
    monkeypatch.setenv("NEWSREC_VARIANTS", '{"a": {"weight": 0}}')
    with pytest.raises(ValueError, match="positive total weight"):
        Settings()


# ------------------------------------------------------------------------------------------------
# hostile clients: body size, key before body, implausible times, Host, headers, docs


def asgi_post(app, headers: dict[str, str], chunks: int, chunk: bytes = b"x" * (1 << 20)) -> tuple[int, int]:
    """POST /v1/events straight through ASGI with a body of `chunks` chunks; (status, bytes the app
    read). The app reads only what it asks `receive` for."""
    read, sent = 0, []

    async def receive() -> dict:
        nonlocal read
        if read >= chunks * len(chunk):
            return {"type": "http.disconnect"}
        read += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": read < chunks * len(chunk)}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/events", "raw_path": b"/v1/events", "query_string": b"", "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    return next(m["status"] for m in sent if m["type"] == "http.response.start"), read


def test_a_keyless_200_mb_post_is_refused_before_its_body_is_read(tmp_path):
    app = create_app(sqlite_settings(tmp_path))
    streamed = {"content-type": "application/json"}  # no length declared: the key decides first
    assert asgi_post(app, streamed, chunks=200) == (401, 0)
    assert asgi_post(app, streamed | {"x-api-key": "wrong"}, chunks=200) == (401, 0)
    declared = streamed | {"content-length": str(200 << 20)}  # the declared length decides first
    assert asgi_post(app, declared, chunks=200) == (413, 0)


def test_bodies_over_the_limit_are_a_413_read_no_further_than_the_limit(tmp_path):
    app = create_app(sqlite_settings(tmp_path, max_body_bytes=64 * 1024))
    keyed = {"content-type": "application/json", "x-api-key": API_KEY}
    # Declared too large: refused on its Content-Length, nothing read.
    assert asgi_post(app, keyed | {"content-length": str(200 << 20)}, chunks=200) == (413, 0)
    # Not declared (chunked): counted while read, refused at the first chunk past the limit.
    status, read = asgi_post(app, keyed, chunks=200, chunk=b"x" * 16384)
    assert status == 413 and read <= 64 * 1024 + 16384
    with running_api(sqlite_settings(tmp_path, max_body_bytes=100)) as api:
        body = {"user_id": "u000001", "article_id": "a001", "impression_id": "r" * 60}
        assert_json_error(api.client.post("/v1/events", json=body, headers={"X-API-Key": API_KEY}), 413)


@pytest.mark.parametrize(
    "viewed_at",
    [
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:11:49+22:16",  # no UTC equivalent: before year 1
        "9999-12-31T23:59:59-23:59",  # nor after year 9999
        "1999-12-31T23:59:59Z",
        timedelta(days=-31),
        timedelta(minutes=6),
    ],
)
def test_implausible_view_times_are_a_json_422_and_land_nothing(api, viewed_at):
    if isinstance(viewed_at, timedelta):  # relative to when the test runs
        viewed_at = (datetime.now(UTC) + viewed_at).isoformat()
    event = {"user_id": "u000001", "article_id": "a001", "viewed_at": viewed_at}
    error = assert_json_error(api.client.post("/v1/events", json=event, headers={"X-API-Key": API_KEY}), 422)
    assert error["details"][0]["loc"] == ["body", "viewed_at"]
    assert not landed(api.settings, "api_view_events")


def test_plausible_view_times_are_accepted(api):
    for viewed_at in (datetime.now(UTC) - timedelta(days=29), datetime.now(UTC) + timedelta(minutes=4)):
        event = {"user_id": "u000001", "article_id": "a001", "viewed_at": viewed_at.isoformat()}
        assert api.client.post("/v1/events", json=event, headers={"X-API-Key": API_KEY}).status_code == 202


def test_no_redirect_echoes_the_host_header(api):
    for path in ("/v1/users/u000001/recommendations/", "/v1/events/", "/docs/"):
        response = api.client.get(path, headers={"Host": "evil.example"}, follow_redirects=False)
        assert response.status_code in (404, 405) and "location" not in response.headers
        assert "evil.example" not in response.text


def test_security_headers_on_every_response(api):
    for path in ("/v1/users/u000001/recommendations", "/healthz", "/v1/nothing", "/docs"):
        headers = api.client.get(path).headers
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["content-security-policy"] == "frame-ancestors 'none'"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["cache-control"] == "no-store"


def test_docs_and_openapi_are_off_unless_enabled(tmp_path):
    with running_api(sqlite_settings(tmp_path, api_docs=False)) as api:
        for path in ("/docs", "/redoc", "/openapi.json", "/docs-assets/swagger-ui-bundle.js"):
            assert_json_error(api.client.get(path), 404)
        assert api.client.get("/healthz").status_code == 200


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_assets_the_app_serves(api, page):
    html = api.client.get(page).text
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html) + re.findall(r"url: '([^']+)'", html)
    assert urls and all(url.startswith("/") and not url.startswith("//") for url in urls), urls
    assert "http://" not in html and "https://" not in html
    for url in urls:
        response = api.client.get(url)
        assert response.status_code == 200 and len(response.content) > 1000, url
    assert api.client.get("/docs-assets/swagger-ui.css").headers["cache-control"].startswith("public")
