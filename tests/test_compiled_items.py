"""The compiled read path (`serving.services._items.render_items`) against the Python path it
stands in for (`Recommender._ranked` + `Recommender._items`), which stays the reference."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from newsrec_assets.resources.online_store import ArticleMeta, SQLiteOnlineStore, UserRecommendations
from serving.core.config import Settings
from serving.core.metrics import Metrics
from serving.services import recommender as recommender_module
from serving.services.recommender import Recommender

compiled = pytest.importorskip(
    "serving.services._items", reason="the Cython extension is not built (pip install -e . needs cc)"
)

DIM = 4
PUBLISHED = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
STORED_POOL = [f"a{i:02d}" for i in range(24)]
FRESH_POOL = [f"f{i:02d}" for i in range(8)]  # published one minute apart, after PUBLISHED
NO_METADATA = {"a03", "a10", "a17", "f05"}  # unpublished: skipped wherever they rank


def fresh_vectors() -> np.ndarray:
    # Small integers: every dot product is exact in float32 and in double, so the two paths must
    # agree to the byte, ties included.
    return np.random.default_rng(7).integers(-2, 3, size=(len(FRESH_POOL), DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def recommender(tmp_path_factory) -> Recommender:
    path = tmp_path_factory.mktemp("compiled") / "online.sqlite"
    store = SQLiteOnlineStore(path)
    store.upsert_articles(
        ArticleMeta(article_id, f"Title {article_id}", "news", "world", PUBLISHED - timedelta(hours=2))
        for article_id in STORED_POOL
        if article_id not in NO_METADATA
    )
    store.upsert_articles(
        ArticleMeta(article_id, f"Fresh {article_id}", "news", "world", PUBLISHED + timedelta(minutes=i))
        for i, article_id in enumerate(FRESH_POOL)
        if article_id not in NO_METADATA
    )
    store.put_article_vectors(FRESH_POOL, fresh_vectors(), "m1")
    store.set_model_version("m1")
    settings = Settings(
        store_backend="sqlite", sqlite_path=path, fresh_refresh_seconds=3600, article_check_seconds=3600
    )
    return Recommender(store, settings, Metrics())


@st.composite
def records(draw) -> UserRecommendations:
    ids = draw(st.lists(st.sampled_from(STORED_POOL + FRESH_POOL), unique=True, max_size=20))
    # Half steps, so stored scores tie with each other and with fresh articles' integer scores.
    scores = sorted((draw(st.integers(-16, 16)) / 2 for _ in ids), reverse=True)
    computed_minutes = draw(st.integers(-1, len(FRESH_POOL)))
    with_vector = draw(st.booleans())
    return UserRecommendations(
        user_id="u1",
        article_ids=ids,
        scores=np.array(scores),
        model_version=draw(st.sampled_from(["m1", "m1", "m0"])),  # m0: fresh vectors do not apply
        layer="batch",
        computed_at=PUBLISHED + timedelta(minutes=computed_minutes, seconds=30),
        watermark=PUBLISHED,
        user_vector=np.array(draw(st.lists(st.integers(-2, 2), min_size=DIM, max_size=DIM)))
        if with_vector
        else None,
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=records(), k=st.integers(1, 25))
def test_compiled_items_are_the_python_paths_to_the_byte(recommender, record, k):
    expected = recommender._items(recommender._ranked(record), k)  # also caches the metadata
    assert recommender._compiled_items(record, k) == expected
    event(f"fresh articles served: {min(expected[2], 2)}+")


def test_fresh_articles_are_merged_by_score_and_once(recommender):
    vectors = fresh_vectors()
    user = np.array([1, 0, 0, 0], dtype=np.float32)
    record = UserRecommendations(
        user_id="u1",
        article_ids=["a00", "f00", "a01"],
        scores=np.array([1.5, 0.5, -0.5]),
        model_version="m1",
        layer="batch",
        computed_at=PUBLISHED - timedelta(minutes=1),  # every fresh article came after it
        watermark=PUBLISHED,
        user_vector=user,
    )
    recommender._items(recommender._ranked(record), 20)  # cache the metadata
    items, article_ids, fresh_served = recommender._compiled_items(record, 20)
    served = orjson.loads(b"[" + items + b"]")
    fresh_scores = dict(zip(FRESH_POOL, (vectors @ user).tolist(), strict=True))
    assert article_ids.count("f00") == 1 and "f05" not in article_ids  # once; no metadata: skipped
    for item in served:
        if item["article_id"] in fresh_scores and item["source"] == "fresh":
            assert item["score"] == fresh_scores[item["article_id"]]
    scores = [item["score"] for item in served]
    assert scores == sorted(scores, reverse=True)
    assert [item["rank"] for item in served] == list(range(1, len(served) + 1))
    assert fresh_served == sum(item["source"] == "fresh" for item in served) > 0


def test_an_uncached_candidate_hands_the_request_to_the_python_path(tmp_path):
    store = SQLiteOnlineStore(tmp_path / "online.sqlite")
    store.upsert_articles([ArticleMeta("a1", "One", "news", "world", PUBLISHED)])
    record = UserRecommendations(
        user_id="u1",
        article_ids=["a1"],
        scores=np.array([1.0]),
        model_version="m1",
        layer="batch",
        computed_at=PUBLISHED,
        watermark=PUBLISHED,
    )
    fresh = Recommender(store, Settings(store_backend="sqlite", sqlite_path=tmp_path / "x.sqlite"), Metrics())
    assert fresh._compiled_items(record, 10) is None
    body = orjson.loads(fresh._render("u1", 10, "r" * 32, (0, "t"), record).body)
    assert [item["article_id"] for item in body["items"]] == ["a1"]
    assert fresh._compiled_items(record, 10) is not None  # cached by the Python path


def test_responses_are_the_same_without_the_compiled_module(recommender, monkeypatch):
    record = UserRecommendations(
        user_id="u1",
        article_ids=["a00", "f01", "a01", "a03"],
        scores=np.array([2.0, 1.0, 0.5, 0.0]),
        model_version="m1",
        layer="speed",
        computed_at=PUBLISHED + timedelta(minutes=2, seconds=30),
        watermark=PUBLISHED,
        user_vector=np.array([1.0, -1.0, 0.5, 0.0]),
    )
    with_compiled = recommender._render("u1", 10, "r" * 32, (0, "t"), record).body
    monkeypatch.setattr(recommender_module, "render_items", None)
    assert recommender._render("u1", 10, "r" * 32, (0, "t"), record).body == with_compiled


@pytest.mark.parametrize(
    ("scores", "vectors", "user"),
    [
        (np.array([1.0], dtype=np.float64), None, None),  # float64 scores
        (np.array([1.0, 2.0], dtype=np.float32), None, None),  # one score too many
        (np.array([1.0], dtype=np.float32), np.ones((1, 3), np.float32), np.ones(4, np.float32)),
    ],
)
def test_mismatched_arrays_are_refused(scores, vectors, user):
    fresh_ids = None if vectors is None else ["f"]
    with pytest.raises(ValueError, match="float32"):
        compiled.render_items(("a",), scores, fresh_ids, vectors, user, {"a": b'"article_id":"a"'}, 1)
