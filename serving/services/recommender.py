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
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
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

        ids, scores, is_fresh = self._merge_fresh(record)
        sources = np.where(is_fresh, "fresh", "stored")
        items = self._items(ids, scores, sources, k)
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

    def _merge_fresh(self, record: UserRecommendations) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        stored_ids = np.asarray(record.article_ids, dtype=str)
        no_merge = (stored_ids, record.scores, np.zeros(len(stored_ids), dtype=bool))
        if record.user_vector is None:
            return no_merge
        snapshot = self.fresh_snapshot()
        articles = snapshot.articles
        if (
            articles is None
            or len(articles) == 0
            or snapshot.model_version != record.model_version
            or articles.vectors.shape[1] != len(record.user_vector)
        ):
            return no_merge
        # Articles are sorted by publish time: those published after computed_at are a suffix.
        start = int(np.searchsorted(articles.published_at_us, to_us(record.computed_at), side="right"))
        if start == len(articles):
            return no_merge
        return merge_fresh_articles(
            stored_ids,
            record.scores,
            record.user_vector,
            articles.article_ids[start:],
            articles.vectors[start:],
            k=len(stored_ids) + len(articles) - start,
        )

    def _cold_start_response(self, user_id: str, k: int, request_id: str, served_at: datetime) -> Served:
        cold = self._cold_start.get()
        ids = np.asarray(cold.article_ids, dtype=str)
        items = self._items(ids, cold.scores, np.full(len(ids), "cold_start"), k)
        self.metrics.served.labels("cold_start").inc()
        provenance = {
            "model_version": cold.model_version,
            "layer": "cold_start",
            "computed_at": format_ts(cold.computed_at),
            "watermark": None,
            "fresh_merged": 0,
        }
        return self._served(user_id, k, request_id, served_at, provenance, items)

    def _items(
        self, ids: np.ndarray, scores: np.ndarray, sources: np.ndarray, k: int
    ) -> list[dict[str, Any]]:
        """The first k candidates that still have metadata, as response items."""
        items: list[dict[str, Any]] = []
        position = 0
        while len(items) < k and position < len(ids):
            stop = min(len(ids), position + k - len(items) + _METADATA_SLACK)
            chunk: Sequence[str] = ids[position:stop].tolist()
            with self.metrics.store_call("get_articles"):
                found = self.store.get_articles(chunk)
            for offset, article_id in enumerate(chunk):
                meta = found.get(article_id)
                if meta is None:
                    continue
                items.append(
                    _item(
                        len(items) + 1,
                        meta,
                        float(scores[position + offset]),
                        str(sources[position + offset]),
                    )
                )
                if len(items) == k:
                    break
            position = stop
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


def _item(rank: int, meta: ArticleMeta, score: float, source: str) -> dict[str, Any]:
    return {
        "rank": rank,
        "article_id": meta.article_id,
        "title": meta.title,
        "category": meta.category,
        "subcategory": meta.subcategory,
        "published_at": format_ts(meta.published_at),
        "url": meta.url,
        "score": score,
        "source": source,
    }
