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

A stored list is merged and rendered by the compiled `serving.services._items.render_items` when
it is built (Cython, at install) and every candidate's metadata is cached; otherwise, and for
cold-start lists, by `_ranked` and `_items` below, the reference it is tested against.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice, repeat
from typing import Generic, NamedTuple, TypeVar

import numpy as np
import orjson

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
from newsrec_assets.resources.online_store.base import from_us, now_utc, to_us
from serving.core.config import Settings
from serving.core.metrics import Metrics

try:
    from serving.services._items import render_items
except ImportError:  # not compiled (no C compiler at install time): the Python path serves alone
    render_items = None

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
    `load(previous)` gets the value it replaces (None the first time), so it can reload
    incrementally.
    """

    def __init__(self, load: Callable[[T | None], T], max_age_s: float, name: str = "refresh") -> None:
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
            value = self._load(None if previous is None else previous[0])
        except StoreError:
            if previous is None or raise_errors:
                raise
            logger.warning("%s: reload failed, keeping the previous value", self._name, exc_info=True)
            self._snapshot = (previous[0], time.monotonic())
            return previous[0]
        self._snapshot = (value, time.monotonic())
        return value


class ArticleFragments:
    """Article metadata as ready-made JSON fragments, cached until the articles change.

    A fragment is the metadata part of a response item, rendered once: the members of a JSON
    object without its braces (`"article_id":"a1","title":...`). Lookups return a fragment per
    known article and None for ids the store does not know (unpublished, deleted: cached too,
    so a list that references them costs no store read). The whole cache is dropped when
    `OnlineStore.article_revision` moves, which is checked at most every `check_seconds`
    (0: on every lookup). Safe to share between threads: a lookup that raced with a drop writes
    into the dropped dict, never into its successor.
    """

    def __init__(self, store: OnlineStore, metrics: Metrics, check_seconds: float, max_entries: int) -> None:
        self.store = store
        self.check_seconds = check_seconds
        self.max_entries = max_entries
        self._fragments: dict[str, bytes | None] = {}
        self._revision: int | None = None
        self._checked_at = float("-inf")
        self._get_articles = metrics.store_timer("get_articles")
        self._article_revision = metrics.store_timer("article_revision")

    def lookup(self, article_ids: list[str]) -> dict[str, bytes | None]:
        """The cache, holding an entry (fragment or None) for each of `article_ids`."""
        fragments = self.cached()
        missing = [article_id for article_id in article_ids if article_id not in fragments]
        if missing:
            found = self._get_articles(self.store.get_articles, missing)
            if len(fragments) + len(missing) > self.max_entries:
                fragments = self._fragments = {}
            for article_id in missing:
                meta = found.get(article_id)
                fragments[article_id] = None if meta is None else _fragment(meta)
        return fragments

    def cached(self) -> dict[str, bytes | None]:
        """The cache as it stands, dropped first if the articles changed; unlike `lookup`, it
        reads nothing from the store for the articles it lacks."""
        now = time.monotonic()
        if now - self._checked_at >= self.check_seconds:
            revision = self._article_revision(self.store.article_revision)
            if revision != self._revision:
                self._fragments = {}
                self._revision = revision
            self._checked_at = now
        return self._fragments


@dataclass(frozen=True)
class FreshSnapshot:
    """Vectors of recently published articles of the current model version, oldest first.

    `published_at_us` and `article_ids` are plain lists: a request bisects the one and slices
    the other, which costs less on lists than on numpy arrays of this size. `full_at` is when the
    snapshot was last loaded whole (monotonic seconds); in between, reloads only add what was
    published since (`extended`).
    """

    model_version: str | None
    article_ids: list[str]
    published_at_us: list[int]
    vectors: np.ndarray
    full_at: float = float("-inf")

    @classmethod
    def empty(cls, model_version: str | None = None) -> FreshSnapshot:
        return cls(model_version, [], [], np.empty((0, 0), dtype=np.float32))

    @classmethod
    def of(cls, articles: FreshArticles, full_at: float) -> FreshSnapshot:
        return cls(
            model_version=articles.model_version,
            article_ids=articles.article_ids.tolist(),
            published_at_us=articles.published_at_us.tolist(),
            vectors=np.ascontiguousarray(articles.vectors, dtype=np.float32),
            full_at=full_at,
        )

    def extended(self, newer: FreshArticles, window_start_us: int) -> FreshSnapshot:
        """This snapshot without the articles published at or before `window_start_us`, plus
        `newer` (articles published at or after this snapshot's newest), each article once."""
        keep = bisect_right(self.published_at_us, window_start_us)
        published = self.published_at_us
        held = set(self.article_ids[bisect_left(published, published[-1]) :]) if published else set()
        new_ids = newer.article_ids.tolist()
        fresh = [i for i, article_id in enumerate(new_ids) if article_id not in held]
        if not fresh and keep == 0:
            return self
        new_published = newer.published_at_us.tolist()
        vectors = self.vectors[keep:]
        if fresh:
            vectors = np.concatenate([vectors, np.asarray(newer.vectors, dtype=np.float32)[fresh]])
        return FreshSnapshot(
            model_version=self.model_version,
            article_ids=self.article_ids[keep:] + [new_ids[i] for i in fresh],
            published_at_us=published[keep:] + [new_published[i] for i in fresh],
            vectors=np.ascontiguousarray(vectors),
            full_at=self.full_at,
        )


class Served(NamedTuple):
    """A rendered response body and what it exposed."""

    body: bytes
    request_id: str
    article_ids: list[str]
    served_at_us: int


class ServingClock:
    """Now, as integer microseconds and as the API's timestamp text, cheaply.

    Formatting a datetime costs more than the rest of a timestamp's work on the read path, and
    consecutive requests share the second: the text up to the second is cached.
    """

    def __init__(self) -> None:
        self._second: tuple[int, str] = (-1, "")  # one attribute, so threads never see a mix

    def now(self) -> tuple[int, str]:
        micros = time.time_ns() // 1000
        second, within = divmod(micros, 1_000_000)
        cached_second, prefix = self._second
        if second != cached_second:
            # format_ts(...) is "YYYY-MM-DDTHH:MM:SS.mmmZ"; keep all but the milliseconds.
            prefix = format_ts(from_us(second * 1_000_000))[:-4]
            self._second = (second, prefix)
        return micros, f"{prefix}{within // 1000:03d}Z"


class Recommender:
    """Renders recommendation responses from the online store."""

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
        self._clock = ServingClock()
        self._get_recommendations = metrics.store_timer("get_recommendations")
        self._async_reads = store.async_reads() if settings.inline_store_reads else None
        self._served = {layer: metrics.served.labels(layer) for layer in ("batch", "speed", "cold_start")}

    # -- caches ----------------------------------------------------------------------------------

    def _load_fresh(self, previous: FreshSnapshot | None) -> FreshSnapshot:
        """The vectors of the articles published within the fresh window.

        A whole load holds the GIL for milliseconds per thousand articles (building the arrays),
        which requests would wait for: so between whole loads, every `fresh_full_reload_seconds`
        or when the model version changes, a reload fetches only the articles published since
        the newest one held and drops those that left the window.
        """
        model = self.metrics.store_timer("get_model_version")(self.store.get_model_version)
        if model is None:
            return FreshSnapshot.empty()
        now = time.monotonic()
        window_start = now_utc() - timedelta(hours=self.settings.fresh_window_hours)
        get_fresh = self.metrics.store_timer("get_fresh_articles")
        if (
            previous is None
            or previous.model_version != model.version
            or not previous.article_ids
            or now - previous.full_at >= self.settings.fresh_full_reload_seconds
        ):
            return FreshSnapshot.of(
                get_fresh(self.store.get_fresh_articles, window_start, model.version), full_at=now
            )
        # Articles published in the same microsecond as the newest held one may have come since.
        since = from_us(previous.published_at_us[-1] - 1)
        newer = get_fresh(self.store.get_fresh_articles, since, model.version)
        return previous.extended(newer, to_us(window_start))

    def _load_cold_start(self, previous: ColdStartList | None) -> ColdStartList:
        stored = self.metrics.store_timer("get_cold_start")(self.store.get_cold_start)
        if stored is not None:
            return stored
        # No cold-start list yet: the newest articles, ranked by freshness alone.
        recent = self.metrics.store_timer("recent_articles")(
            self.store.recent_articles, self.settings.max_k + _METADATA_SLACK
        )
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
            return FreshSnapshot.empty()

    # -- the read path ---------------------------------------------------------------------------

    def recommend(self, user_id: str, k: int, request_id: str) -> Served:
        """The top-k response for a user. Raises `StoreError` if the store cannot be read."""
        served_at = self._clock.now()
        record = self._get_recommendations(self.store.get_recommendations, user_id)
        return self._render(user_id, k, request_id, served_at, record)

    async def recommend_async(self, user_id: str, k: int, request_id: str) -> Served:
        """`recommend`, awaiting the store's non-blocking read (only when `reads_async`)."""
        served_at = self._clock.now()
        record = await self._get_recommendations.wait(self._async_reads.get_recommendations(user_id))
        return self._render(user_id, k, request_id, served_at, record)

    @property
    def reads_async(self) -> bool:
        """Whether the store offers reads that do not block the event loop."""
        return self._async_reads is not None

    def close(self) -> None:
        if self._async_reads is not None:
            self._async_reads.close()

    def _render(
        self,
        user_id: str,
        k: int,
        request_id: str,
        served_at: tuple[int, str],
        record: UserRecommendations | None,
    ) -> Served:
        served_at_us, served_at_text = served_at
        if record is None:
            cold = self._cold_start.get()
            ranked = zip(cold.article_ids, cold.scores.tolist(), repeat(_COLD_START), strict=False)
            items, article_ids, fresh_served = self._items(ranked, k)
            layer = "cold_start"
            provenance = _provenance(cold.model_version, layer, cold.computed_at, None)
        else:
            rendered = self._compiled_items(record, k) if render_items is not None else None
            items, article_ids, fresh_served = rendered or self._items(self._ranked(record), k)
            layer = record.layer
            provenance = _provenance(record.model_version, layer, record.computed_at, record.watermark)
        if fresh_served:
            self.metrics.fresh_merged.inc(fresh_served)
        (self._served.get(layer) or self.metrics.served.labels(layer)).inc()
        body = _BODY % (
            orjson.dumps(user_id),
            orjson.dumps(request_id),
            orjson.dumps(served_at_text),
            k,
            provenance,
            fresh_served,
            items,
        )
        return Served(body, request_id, article_ids, served_at_us)

    def _compiled_items(self, record: UserRecommendations, k: int) -> tuple[bytes, list[str], int] | None:
        """`_items(_ranked(record), k)` in one compiled pass; None when a candidate's metadata is
        not cached yet (the Python path then looks it up)."""
        fresh_ids, fresh_vectors = self._fresh_after(record)
        return render_items(
            record.article_ids,
            record.scores,
            fresh_ids,
            fresh_vectors,
            record.user_vector,
            self.articles.cached(),
            k,
        )

    def _ranked(self, record: UserRecommendations) -> Iterator[tuple[str, float, bytes]]:
        """`(article_id, score, source)` best first: the stored list with fresh articles merged in."""
        fresh_ids, fresh_vectors = self._fresh_after(record)
        if fresh_ids is None:
            return zip(record.article_ids, record.scores.tolist(), repeat(_STORED), strict=False)
        merged = merge_fresh_articles(
            record.article_ids, record.scores, record.user_vector, fresh_ids, fresh_vectors
        )
        return ((article_id, score, _FRESH if fresh else _STORED) for article_id, score, fresh in merged)

    def _fresh_after(self, record: UserRecommendations) -> tuple[list[str], np.ndarray] | tuple[None, None]:
        """Ids and vectors of the articles published after the list was computed, if comparable."""
        if record.user_vector is None:
            return None, None
        snapshot = self.fresh_snapshot()
        if (
            not snapshot.article_ids
            or snapshot.model_version != record.model_version
            or snapshot.vectors.shape[1] != len(record.user_vector)
        ):
            return None, None
        # Articles are sorted by publish time: those published after computed_at are a suffix.
        start = bisect_right(snapshot.published_at_us, _micros(record.computed_at))
        if start == len(snapshot.article_ids):
            return None, None
        return snapshot.article_ids[start:], snapshot.vectors[start:]

    def _items(self, ranked: Iterator[tuple[str, float, bytes]], k: int) -> tuple[bytes, list[str], int]:
        """The first k ranked candidates that still have metadata, rendered as the members of a
        JSON array; also their article ids and how many of them are fresh."""
        items: list[bytes] = []
        article_ids: list[str] = []
        fresh = 0
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
                article_ids.append(article_id)
                items.append(_ITEM % (len(items) + 1, fragment, orjson.dumps(score), source))
                if source is _FRESH:
                    fresh += 1
                if len(items) == k:
                    break
        return b",".join(items), article_ids, fresh


# The lists of one batch share computed_at and watermark: convert and format each once.
_micros = functools.lru_cache(maxsize=4096)(to_us)
_timestamp_text = functools.lru_cache(maxsize=4096)(format_ts)


@functools.lru_cache(maxsize=4096)
def _provenance(
    model_version: str | None, layer: str, computed_at: datetime, watermark: datetime | None
) -> bytes:
    """The members of a response's `provenance` before `fresh_merged`: the same for every list of
    a batch, so rendered once."""
    rendered = orjson.dumps(
        {
            "model_version": model_version,
            "layer": layer,
            "computed_at": _timestamp_text(computed_at),
            "watermark": None if watermark is None else _timestamp_text(watermark),
        }
    )
    return rendered[1:-1]


# A response body, filled by `bytes % ...`: the parts that vary come in rendered (orjson, or the
# cached provenance and items), which costs less than building and dumping a dict per request.
_BODY = (
    b'{"user_id":%b,"request_id":%b,"served_at":%b,"k":%d,"provenance":{%b,"fresh_merged":%d},"items":[%b]}'
)

# One response item: rank, the article's cached fragment, score and source.
_STORED, _FRESH, _COLD_START = b"stored", b"fresh", b"cold_start"
_ITEM = b'{"rank":%d,%b,"score":%b,"source":"%b"}'


def _fragment(meta: ArticleMeta) -> bytes:
    """The metadata members of a response item, rendered (the rest: rank, score, source)."""
    rendered = orjson.dumps(
        {
            "article_id": meta.article_id,
            "title": meta.title,
            "category": meta.category,
            "subcategory": meta.subcategory,
            "published_at": format_ts(meta.published_at),
            "url": meta.url,
        }
    )
    return rendered[1:-1]
