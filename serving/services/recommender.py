"""The read path: a user's list from the list store, fresh articles merged in, metadata joined.

One store read per request. A list computed at 10:00 cannot contain an article published at
10:05: the store keeps the user vector with each list and the article cache the vectors of recent
articles, so articles published after the list's `computed_at` are scored against the user vector
(NAML's dot product) and merged into the ranking (`merge_fresh_articles`). The recent vectors, the
cold-start list and the article revision are cached per process and reloaded in the background
(`Refreshing`). Article metadata is cached per article until the revision moves; unknown users get
the cold-start list (without one, the newest articles); items whose article is gone are skipped.

Each user is in one A/B variant (`assign_variant`, a stable hash of the user id), which names the
ranker settings: whether fresh articles are merged, and the diversity re-rank (at most
`diversity_cap` items per subcategory ahead of the rest). Category filters and the re-rank apply
after the metadata join, then `offset` pages. What is served is offered to the exposure log
(`exposures`, a window batcher) without waiting for it. `related` ranks the cached recent
vectors by cosine.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from itertools import islice, repeat
from typing import Any, Generic, TypeVar

import numpy as np

from newsrec_assets.domain.ranking import (
    assign_variant,
    cap_per_group,
    cold_start_list,
    merge_fresh_articles,
)
from newsrec_assets.resources.online_store.base import (
    ArticleMeta,
    ColdStartList,
    FreshArticles,
    StoreError,
    UserRecommendations,
    now_utc,
    to_us,
)
from serving.core.config import Settings
from serving.core.metrics import Metrics
from serving.core.store import Reads, Stores
from serving.services.batching import WindowBatcher
from serving.services.landing import Exposure

logger = logging.getLogger(__name__)
T = TypeVar("T")


class Refreshing(Generic[T]):
    """A value loaded lazily and reloaded once older than `max_age_s`, thread-safe.

    Only the first load blocks its caller; after that a stale value is returned at once while a
    background thread reloads it. A failed background reload keeps the previous value (retried
    after another `max_age_s`). With `max_age_s == 0` every call reloads in place (tests).
    """

    def __init__(self, load: Callable[[], T], max_age_s: float, name: str) -> None:
        self._load, self._max_age_s, self._name = load, max_age_s, name
        self._lock = threading.Lock()  # held by whoever is loading
        self._snapshot: tuple[T, float] | None = None

    def get(self) -> T:
        snapshot = self._snapshot
        if snapshot is not None and time.monotonic() - snapshot[1] < self._max_age_s:
            return snapshot[0]
        if snapshot is None or self._max_age_s == 0:
            with self._lock:
                return self._reload()
        if self._lock.acquire(blocking=False):  # otherwise another thread is reloading already
            threading.Thread(target=self._reload_in_background, name=self._name, daemon=True).start()
        return snapshot[0]

    def _reload_in_background(self) -> None:
        try:
            self._reload()
        except StoreError:
            logger.warning("%s: reload failed, keeping the previous value", self._name, exc_info=True)
            self._snapshot = (self._snapshot[0], time.monotonic())  # type: ignore[index]
        finally:
            self._lock.release()

    def _reload(self) -> T:
        value = self._load()
        self._snapshot = (value, time.monotonic())
        return value


class Recommender:
    """Builds recommendation responses; `reads` is set when the app starts serving."""

    def __init__(self, stores: Stores, settings: Settings, metrics: Metrics) -> None:
        self.stores, self.settings, self.metrics = stores, settings, metrics
        self.reads: Reads | None = None
        self.exposures: WindowBatcher | None = None  # what was served lands here, when logged
        self._fresh = Refreshing(self._load_fresh, settings.fresh_refresh_seconds, "fresh-articles")
        self._cold_start = Refreshing(
            self._load_cold_start, settings.cold_start_refresh_seconds, "cold-start"
        )
        self._revision = Refreshing(
            lambda: metrics.timed("article_revision", stores.articles.article_revision),
            settings.article_check_seconds,
            "article-revision",
        )
        self._weights = {name: v.weight for name, v in settings.variants.items()}
        self._details: dict[str, dict[str, Any] | None] = {}
        self._details_revision: int | None = None

    def _load_fresh(self) -> FreshArticles | None:
        model_version = self.metrics.timed("get_model_version", self.stores.lists.get_model_version)
        if model_version is None:
            return None
        since = now_utc() - timedelta(hours=self.settings.fresh_window_hours)
        return self.metrics.timed(
            "get_fresh_articles", self.stores.articles.get_fresh_articles, since, model_version
        )

    def _load_cold_start(self) -> ColdStartList:
        stored = self.metrics.timed("get_cold_start", self.stores.lists.get_cold_start)
        if stored is not None:
            return stored
        recent = self.metrics.timed(
            "recent_articles", self.stores.articles.recent_articles, self.settings.max_k + 8
        )
        now = now_utc()
        ids, scores = cold_start_list(
            [a.article_id for a in recent], [a.published_at for a in recent], np.zeros(len(recent)), now,
            k=len(recent), popularity_weight=0.0,
        )  # fmt: skip
        return ColdStartList(article_ids=tuple(ids.tolist()), scores=scores, computed_at=now)

    async def recommend(
        self, user_id: str, k: int, request_id: str, offset: int = 0, **filters: str | None
    ) -> dict[str, Any]:
        """The response of a user's list, items `offset + 1 .. offset + k` after the `category` /
        `subcategory` filters (`RecommendationsResponse`'s fields). Raises `StoreError` if the
        store fails."""
        served_at = now_utc()
        variant_name = assign_variant(user_id, self._weights, self.settings.variant_salt)
        variant = self.settings.variants[variant_name]
        record = await self.metrics.timed_async(
            "get_recommendations", self.reads.get_recommendations(user_id)
        )
        if record is None:
            cold = self._cold_start.get()
            ranked = zip(cold.article_ids, cold.scores.tolist(), repeat("cold_start"), strict=False)
            provenance = {"model_version": cold.model_version, "layer": "cold_start"}
            provenance |= {"computed_at": cold.computed_at, "watermark": None}
        else:
            ranked = self._ranked(record, variant.fresh_merge)
            provenance = {"model_version": record.model_version, "layer": record.layer}
            provenance |= {"computed_at": record.computed_at, "watermark": record.watermark}
        candidates = await self._candidates(ranked, offset + k, variant.diversity_cap, filters)
        # `dict(detail, ...)` copies the cached fields in one go, at half the cost of `{..., **detail}`
        items = [
            dict(detail, rank=rank, score=score, source=source)
            for rank, (detail, score, source) in enumerate(candidates[offset:], offset + 1)
        ]
        fresh = sum(source == "fresh" for _, _, source in candidates[offset:])
        if fresh:
            self.metrics.fresh_merged.inc(fresh)
        self.metrics.served_by_layer[provenance["layer"]].inc()
        if self.exposures is not None and items:
            shown = [item["article_id"] for item in items]
            self.exposures.offer(Exposure(request_id, user_id, shown, served_at, offset, variant_name))
        return {
            "user_id": user_id,
            "request_id": request_id,
            "served_at": served_at,
            "k": k,
            "offset": offset,
            "provenance": provenance | {"fresh_merged": fresh, "variant": variant_name},
            "items": items,
        }

    async def related(self, article_id: str, k: int) -> dict[str, Any] | None:
        """The k live articles nearest to `article_id` by cosine of the cached recent vectors, or
        None if it has none (older than the fresh window, or not embedded)."""
        fresh = self._fresh.get()
        hits = np.flatnonzero(fresh.article_ids == article_id) if fresh is not None else ()
        if not len(hits):
            return None
        unit = fresh.vectors / np.maximum(np.linalg.norm(fresh.vectors, axis=1, keepdims=True), 1e-12)
        scores = unit @ unit[hits[0]]
        order = (i for i in np.argsort(-scores, kind="stable") if i != hits[0])
        candidates = await self._candidates(
            ((str(fresh.article_ids[i]), scores[i], "fresh") for i in order), k, 0, {}
        )
        return {
            "article_id": article_id,
            "k": k,
            "model_version": fresh.model_version,
            "items": [
                dict(detail, rank=rank, score=score) for rank, (detail, score, _) in enumerate(candidates, 1)
            ],
        }

    def _ranked(self, record: UserRecommendations, fresh_merge: bool) -> Iterator[tuple[str, float, str]]:
        """`(article_id, score, source)` best first: the stored list, fresh articles merged in."""
        fresh = self._fresh_after(record) if fresh_merge else None
        if fresh is None:
            return zip(record.article_ids, record.scores.tolist(), repeat("stored"), strict=False)
        merged = merge_fresh_articles(record.article_ids, record.scores, record.user_vector, *fresh)
        return (
            (article_id, score, "fresh" if is_fresh else "stored") for article_id, score, is_fresh in merged
        )

    def _fresh_after(self, record: UserRecommendations) -> tuple[np.ndarray, np.ndarray] | None:
        """Ids and vectors of the articles published after the list was computed, if comparable."""
        try:
            fresh = self._fresh.get()
        except StoreError:
            logger.warning("fresh articles unavailable, serving stored lists only", exc_info=True)
            return None
        if (
            fresh is None
            or record.user_vector is None
            or fresh.model_version != record.model_version
            or fresh.vectors.shape[1:] != record.user_vector.shape
        ):
            return None
        start = int(np.searchsorted(fresh.published_at_us, to_us(record.computed_at), side="right"))
        return (fresh.article_ids[start:], fresh.vectors[start:]) if start < len(fresh) else None

    async def _candidates(
        self, ranked: Iterator[tuple[str, float, str]], n: int, cap: int, filters: dict[str, str | None]
    ) -> list[tuple[dict[str, Any], float, str]]:
        """`(details, score, source)` of the first n ranked candidates whose article is still known
        and matches `filters`; with a diversity `cap`, the re-ranked first n of all of them."""
        wanted = {field: value for field, value in filters.items() if value is not None}
        ranked = islice(ranked, max(n, self.settings.max_candidates))
        found: list[tuple[dict[str, Any], float, str]] = []
        step = 64 if cap or wanted else 0  # filtering or re-ranking: read ahead in larger chunks
        while (cap or len(found) < n) and (chunk := list(islice(ranked, max(n - len(found), step)))):
            details = await self._details_of([article_id for article_id, _, _ in chunk])
            found += [
                (detail, float(score), source)
                for article_id, score, source in chunk
                if (detail := details[article_id]) is not None
                and (not wanted or all(detail[field] == value for field, value in wanted.items()))
            ]
        if cap:
            found = [found[i] for i in cap_per_group([detail["subcategory"] for detail, _, _ in found], cap)]
        return found[:n]

    async def _details_of(self, article_ids: list[str]) -> dict[str, dict[str, Any] | None]:
        """Response fields per article (None: not published), cached until the revision moves."""
        revision = self._revision.get()
        if revision != self._details_revision or len(self._details) > self.settings.article_cache_entries:
            self._details, self._details_revision = {}, revision
        cache = self._details
        missing = [article_id for article_id in article_ids if article_id not in cache]
        if missing:
            found = await self.metrics.timed_async("get_articles", self.reads.get_articles(missing))
            cache.update((article_id, _detail(found.get(article_id))) for article_id in missing)
        return cache


def _detail(meta: ArticleMeta | None) -> dict[str, Any] | None:
    if meta is None:
        return None
    return {
        "article_id": meta.article_id,
        "title": meta.title,
        "category": meta.category,
        "subcategory": meta.subcategory,
        "published_at": meta.published_at,
        "url": meta.url,
    }
