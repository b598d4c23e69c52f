"""The read path: a user's list from the online store, fresh articles merged in, metadata joined.

A list precomputed at 10:00 cannot contain an article published at 10:05. Serving closes that
gap without calling the model: the store keeps the user vector with each list and the vectors of
recently published articles; articles published after the list's `computed_at` are scored
against the user vector (a dot product, as NAML's click predictor) and merged into the ranking
(`merge_fresh_articles`). The recent article vectors are cached per process and refreshed in the
background at most every `fresh_refresh_seconds`; they are sorted by publish time, so finding the
articles newer than a list is a binary search. Vectors of another model version than the list's
are not merged.

Unknown users get the cold-start list (also cached); without one, the newest articles.
Items whose article has no metadata (unpublished, deleted) are skipped.

Article metadata is rendered once per article into a response fragment and cached per process
(`ArticleFragments`), because the same few thousand articles appear in every list; the cache is
dropped when the store's `article_revision` changes, checked at most every
`article_check_seconds`. That bound is how long an edited or unpublished article can still be
served as it was.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice, repeat
from typing import Any, Generic, TypeVar

import numpy as np

from newsrec_assets.domain.cdc import format_ts
from newsrec_assets.domain.ranking import cold_start_list, merge_fresh_articles
from newsrec_assets.resources.online_store import (
    ArticleMeta,
    ColdStartList,
    FreshArticles,
    OnlineStore,
    StoreError,
    UserRecommendations,
)
from newsrec_assets.resources.online_store.base import now_utc, to_us
from serving.core.config import Settings
from serving.core.metrics import Metrics

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Metadata is fetched for a few more candidates than requested, in case some are gone.
_METADATA_SLACK = 8


class Refreshing(Generic[T]):
    """A value loaded lazily and reloaded once it is older than `max_age_s`, thread-safe.

    Only the first load blocks the caller. After that, a stale value is returned at once while a
    background thread reloads it (stale-while-revalidate), so no request pays for a reload. If a
    background reload fails, the previous value is kept and retried after another `max_age_s`.
    With `max_age_s == 0` every call reloads synchronously and raises on failure (tests).
    """

    def __init__(self, load: Callable[[], T], max_age_s: float, name: str = "refresh") -> None:
        self._load = load
        self._max_age_s = max_age_s
        self._name = name
        self._lock = threading.Lock()  # held by whoever is loading
        self._snapshot: tuple[T, float] | None = None

    def get(self) -> T:
        snapshot = self._snapshot
        if snapshot is not None and time.monotonic() - snapshot[1] < self._max_age_s:
            return snapshot[0]
        if snapshot is None or self._max_age_s == 0:
            with self._lock:
                return self._reload(raise_errors=True)
        if self._lock.acquire(blocking=False):  # otherwise another thread is already reloading
            threading.Thread(target=self._reload_in_background, name=self._name, daemon=True).start()
        return snapshot[0]

    def _reload_in_background(self) -> None:
        try:
            self._reload(raise_errors=False)
        finally:
            self._lock.release()

    def _reload(self, raise_errors: bool) -> T:
        previous = self._snapshot
        if previous is not None and self._max_age_s > 0 and time.monotonic() - previous[1] < self._max_age_s:
            return previous[0]  # reloaded by another thread meanwhile
        try:
            value = self._load()
        except StoreError:
            if previous is None or raise_errors:
                raise
            logger.warning("%s: reload failed, keeping the previous value", self._name, exc_info=True)
            self._snapshot = (previous[0], time.monotonic())
            return previous[0]
        self._snapshot = (value, time.monotonic())
        return value


class ArticleFragments:
    """Article metadata as ready-made response fragments, cached until the articles change.

    Lookups return a fragment per known article and None for ids the store does not know
    (unpublished, deleted: cached too, so a list that references them costs no store read).
    The whole cache is dropped when `OnlineStore.article_revision` moves, which is checked at
    most every `check_seconds` (0: on every lookup). Safe to share between threads: a lookup
    that raced with a drop writes into the dropped dict, never into its successor.
    """

    def __init__(self, store: OnlineStore, metrics: Metrics, check_seconds: float, max_entries: int) -> None:
        self.store = store
        self.metrics = metrics
        self.check_seconds = check_seconds
        self.max_entries = max_entries
        self._fragments: dict[str, dict[str, Any] | None] = {}
        self._revision: int | None = None
        self._checked_at = float("-inf")

    def lookup(self, article_ids: list[str]) -> dict[str, dict[str, Any] | None]:
        """The cache, holding an entry (fragment or None) for each of `article_ids`."""
        fragments = self._current()
        missing = [article_id for article_id in article_ids if article_id not in fragments]
        if missing:
            with self.metrics.store_call("get_articles"):
                found = self.store.get_articles(missing)
            if len(fragments) + len(missing) > self.max_entries:
                fragments = self._fragments = {}
            for article_id in missing:
                meta = found.get(article_id)
                fragments[article_id] = None if meta is None else _fragment(meta)
        return fragments

    def _current(self) -> dict[str, dict[str, Any] | None]:
        now = time.monotonic()
        if now - self._checked_at >= self.check_seconds:
            with self.metrics.store_call("article_revision"):
                revision = self.store.article_revision()
            if revision != self._revision:
                self._fragments = {}
                self._revision = revision
            self._checked_at = now
        return self._fragments


@dataclass(frozen=True)
class FreshSnapshot:
    """Vectors of recently published articles of the current model version."""

    model_version: str | None
    articles: FreshArticles | None


@dataclass(frozen=True)
class Served:
    """A response body and what it exposed."""

    body: dict[str, Any]
    article_ids: list[str]
    served_at: datetime


class Recommender:
    """Builds recommendation responses from the online store."""

    def __init__(self, store: OnlineStore, settings: Settings, metrics: Metrics) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self._fresh = Refreshing(self._load_fresh, settings.fresh_refresh_seconds, "fresh-articles")
        self._cold_start = Refreshing(
            self._load_cold_start, settings.cold_start_refresh_seconds, "cold-start"
        )
        self.articles = ArticleFragments(
            store, metrics, settings.article_check_seconds, settings.article_cache_entries
        )

    # -- caches ----------------------------------------------------------------------------------

    def _load_fresh(self) -> FreshSnapshot:
        with self.metrics.store_call("get_model_version"):
            model = self.store.get_model_version()
        if model is None:
            return FreshSnapshot(model_version=None, articles=None)
        since = now_utc() - timedelta(hours=self.settings.fresh_window_hours)
        with self.metrics.store_call("get_fresh_articles"):
            articles = self.store.get_fresh_articles(since, model.version)
        return FreshSnapshot(model_version=model.version, articles=articles)

    def _load_cold_start(self) -> ColdStartList:
        with self.metrics.store_call("get_cold_start"):
            stored = self.store.get_cold_start()
        if stored is not None:
            return stored
        # No cold-start list yet: the newest articles, ranked by freshness alone.
        with self.metrics.store_call("recent_articles"):
            recent = self.store.recent_articles(self.settings.max_k + _METADATA_SLACK)
        now = now_utc()
        ids, scores = cold_start_list(
            [a.article_id for a in recent],
            [a.published_at for a in recent],
            np.zeros(len(recent)),
            now,
            k=len(recent),
            popularity_weight=0.0,
        )
        return ColdStartList(article_ids=tuple(ids.tolist()), scores=scores, computed_at=now)

    def fresh_snapshot(self) -> FreshSnapshot:
        """The cached fresh-article vectors; an empty snapshot if the store cannot give them."""
        try:
            return self._fresh.get()
        except StoreError:
            logger.warning("fresh articles unavailable, serving stored lists only", exc_info=True)
            return FreshSnapshot(model_version=None, articles=None)

    # -- the read path ---------------------------------------------------------------------------

    def recommend(self, user_id: str, k: int, request_id: str) -> Served:
        """The top-k response for a user. Raises `StoreError` if the store cannot be read."""
        served_at = now_utc()
        with self.metrics.store_call("get_recommendations"):
            record = self.store.get_recommendations(user_id)
        if record is None:
            return self._cold_start_response(user_id, k, request_id, served_at)

        items = self._items(self._ranked(record), k)
        fresh_served = sum(1 for item in items if item["source"] == "fresh")
        if fresh_served:
            self.metrics.fresh_merged.inc(fresh_served)
        self.metrics.served.labels(record.layer).inc()
        provenance = {
            "model_version": record.model_version,
            "layer": record.layer,
            "computed_at": format_ts(record.computed_at),
            "watermark": format_ts(record.watermark),
            "fresh_merged": fresh_served,
        }
        return self._served(user_id, k, request_id, served_at, provenance, items)

    def _ranked(self, record: UserRecommendations) -> Iterator[tuple[str, float, str]]:
        """`(article_id, score, source)` best first: the stored list with fresh articles merged in."""
        fresh_ids, fresh_vectors = self._fresh_after(record)
        if fresh_ids is None:
            return zip(record.article_ids, record.scores.tolist(), repeat("stored"), strict=False)
        merged = merge_fresh_articles(
            record.article_ids, record.scores, record.user_vector, fresh_ids, fresh_vectors
        )
        return (
            (article_id, score, "fresh" if is_fresh else "stored") for article_id, score, is_fresh in merged
        )

    def _fresh_after(self, record: UserRecommendations) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
        """Ids and vectors of the articles published after the list was computed, if comparable."""
        if record.user_vector is None:
            return None, None
        snapshot = self.fresh_snapshot()
        articles = snapshot.articles
        if (
            articles is None
            or len(articles) == 0
            or snapshot.model_version != record.model_version
            or articles.vectors.shape[1] != len(record.user_vector)
        ):
            return None, None
        # Articles are sorted by publish time: those published after computed_at are a suffix.
        start = int(np.searchsorted(articles.published_at_us, to_us(record.computed_at), side="right"))
        if start == len(articles):
            return None, None
        return articles.article_ids[start:], articles.vectors[start:]

    def _cold_start_response(self, user_id: str, k: int, request_id: str, served_at: datetime) -> Served:
        cold = self._cold_start.get()
        ranked = zip(cold.article_ids, cold.scores.tolist(), repeat("cold_start"), strict=False)
        items = self._items(ranked, k)
        self.metrics.served.labels("cold_start").inc()
        provenance = {
            "model_version": cold.model_version,
            "layer": "cold_start",
            "computed_at": format_ts(cold.computed_at),
            "watermark": None,
            "fresh_merged": 0,
        }
        return self._served(user_id, k, request_id, served_at, provenance, items)

    def _items(self, ranked: Iterator[tuple[str, float, str]], k: int) -> list[dict[str, Any]]:
        """The first k ranked candidates that still have metadata, as response items."""
        items: list[dict[str, Any]] = []
        while len(items) < k:
            # Take no more than still needed: with the metadata cache warm, another round is cheap.
            chunk = list(islice(ranked, k - len(items)))
            if not chunk:
                break
            fragments = self.articles.lookup([article_id for article_id, _, _ in chunk])
            for article_id, score, source in chunk:
                fragment = fragments.get(article_id)
                if fragment is None:
                    continue
                items.append({"rank": len(items) + 1, **fragment, "score": score, "source": source})
                if len(items) == k:
                    break
        return items

    @staticmethod
    def _served(
        user_id: str,
        k: int,
        request_id: str,
        served_at: datetime,
        provenance: dict[str, Any],
        items: list[dict[str, Any]],
    ) -> Served:
        body = {
            "user_id": user_id,
            "request_id": request_id,
            "served_at": format_ts(served_at),
            "k": k,
            "provenance": provenance,
            "items": items,
        }
        return Served(body=body, article_ids=[item["article_id"] for item in items], served_at=served_at)


def _fragment(meta: ArticleMeta) -> dict[str, Any]:
    """The metadata part of a response item (the rest: rank, score, source)."""
    return {
        "article_id": meta.article_id,
        "title": meta.title,
        "category": meta.category,
        "subcategory": meta.subcategory,
        "published_at": format_ts(meta.published_at),
        "url": meta.url,
    }
