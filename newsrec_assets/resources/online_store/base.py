"""The online store's two ports, by concern, and the records they hold.

- `ListStore`: per user one `UserRecommendations` (ranked ids, scores, model version, layer,
  computed-at, the event-time watermark it reflects, the user vector); the cold-start list, the
  model version and the speed layer's recent clicks.
- `ArticleCache`: article metadata (with a revision that moves with every change) and the
  vectors of recently published articles, for read-time scoring.

`ListStore`'s two rules (DESIGN.md, data contract 6): a write older than the list the reader sees
is refused, an equal watermark's later write wins (**watermark rule**); a reader sees the whole
previous batch generation or the whole new one (**atomic publish**). Batch lists live in
generations: a publish stages its own, invisible, in small writes (speed writes never queue behind
one long transaction), flips one pointer atomically, then deletes older generations. Speed lists
live apart; every live write and every flip takes a number from one write sequence, and a read
resolves the current generation's row against the live row atomically: newer watermark, then higher
sequence. One publish runs at a time (a lease); what a publish that died had staged is deleted by
the next publish and when a writer opens the store. Times are UTC, stored as integer microseconds.

A sharded batch stages in pieces: every shard (its own process or pod) stages its users under the
batch's key (`stage_shard`, no lease: shards stage side by side), and `publish_shards` flips the
newest batch whose shards are all staged, so readers still see all of it or none. A batch that
never completes is dropped once a newer generation is published.
"""

from __future__ import annotations

import functools
import struct
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any, Literal

import numpy as np
import orjson

Layer = Literal["batch", "speed"]
DEFAULT_CAPACITY = 100
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class StoreError(Exception):
    """The online store failed to serve a request."""


class StoreUnavailable(StoreError):
    """The store cannot be reached (connection refused, file missing, locked past the timeout)."""


class ReadOnlyStore(StoreError):
    """A write was attempted through a read-only handle."""


def to_utc(moment: datetime) -> datetime:
    """An aware UTC datetime; naive datetimes are taken as UTC."""
    if not isinstance(moment, datetime):
        raise TypeError(f"expected a datetime, got {type(moment).__name__}")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def to_us(moment: datetime) -> int:
    """Integer microseconds since the epoch (exact, unlike `datetime.timestamp()`)."""
    return (to_utc(moment) - _EPOCH) // timedelta(microseconds=1)


@functools.lru_cache(maxsize=4096)  # the lists of one batch share their timestamps
def from_us(micros: int) -> datetime:
    """The aware UTC datetime of integer microseconds since the epoch."""
    return _EPOCH + timedelta(microseconds=int(micros))


def from_us_or_none(micros: int | None) -> datetime | None:
    return None if micros is None else from_us(micros)


def now_utc() -> datetime:
    return datetime.now(UTC)


def _float32_vector(values: Any, name: str) -> np.ndarray:
    array = np.ascontiguousarray(np.asarray(values, dtype=np.float32).reshape(-1))
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    array.setflags(write=False)
    return array


def _set_ranking(ranked: UserRecommendations | ColdStartList) -> None:
    """Normalise a ranked list's `article_ids` (str) and `scores` (float32) and check they pair up."""
    object.__setattr__(ranked, "article_ids", tuple(str(article_id) for article_id in ranked.article_ids))
    object.__setattr__(ranked, "scores", _float32_vector(ranked.scores, "scores"))
    if len(ranked.article_ids) != len(ranked.scores):
        raise ValueError(f"{len(ranked.article_ids)} article ids but {len(ranked.scores)} scores")


@dataclass(frozen=True, eq=False)
class UserRecommendations:
    """One user's ranked list, best first. `watermark` is the event time of the newest behaviour
    event it accounts for; `user_vector` (float32) scores articles published after `computed_at`."""

    user_id: str
    article_ids: tuple[str, ...]
    scores: np.ndarray
    model_version: str
    layer: Layer
    computed_at: datetime
    watermark: datetime
    user_vector: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.user_id, str) or not self.user_id:
            raise ValueError("user_id must be a non-empty string")
        set_ = object.__setattr__
        _set_ranking(self)
        if len(set(self.article_ids)) != len(self.article_ids):
            raise ValueError("article_ids must be distinct")
        if self.layer not in ("batch", "speed"):
            raise ValueError(f"layer must be 'batch' or 'speed', got {self.layer!r}")
        if not self.model_version:
            raise ValueError("model_version must be set")
        set_(self, "computed_at", to_utc(self.computed_at))
        set_(self, "watermark", to_utc(self.watermark))
        if self.user_vector is not None:
            set_(self, "user_vector", _float32_vector(self.user_vector, "user_vector"))


@dataclass(frozen=True)
class WriteResult:
    """Outcome of a per-user write. `stored_watermark` is what the reader saw before the write."""

    accepted: bool
    reason: Literal["written", "stale_watermark"]
    stored_watermark: datetime | None = None


@dataclass(frozen=True)
class PublishResult:
    """Outcome of a batch publish; `speed_lists_kept` counts users whose fresher speed list stays."""

    generation: int
    published: bool
    reason: str
    users_written: int = 0
    speed_lists_kept: int = 0
    watermark: datetime | None = None


@dataclass(frozen=True)
class StagedShard:
    """One shard staged under a batch: its users and the newest watermark among them."""

    batch_key: str
    generation: int
    shard: int
    users: int
    watermark: datetime | None


@dataclass(frozen=True)
class GenerationInfo:
    """The batch generation readers currently see."""

    generation: int
    watermark: datetime | None
    model_version: str | None
    users: int
    published_at: datetime | None


@dataclass(frozen=True)
class ArticleMeta:
    """What the API shows about an article."""

    article_id: str
    title: str
    category: str
    subcategory: str
    published_at: datetime
    url: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "published_at", to_utc(self.published_at))


@dataclass(frozen=True, eq=False)
class FreshArticles:
    """Vectors of recently published articles, oldest first, for read-time scoring."""

    article_ids: np.ndarray  # articles, str
    published_at_us: np.ndarray  # articles, int64
    vectors: np.ndarray  # articles, dim; float32
    model_version: str

    @classmethod
    def of(cls, model_version: str, rows: Sequence[tuple[str, int, bytes]]) -> FreshArticles:
        """From `(article_id, published_at_us, float32 vector bytes)` rows, oldest first."""
        if not rows:
            return cls(
                np.empty(0, dtype=str), np.empty(0, np.int64), np.empty((0, 0), np.float32), model_version
            )
        ids, published, blobs = zip(*rows, strict=True)
        vectors = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(rows), -1)
        return cls(np.asarray(ids, dtype=str), np.asarray(published, dtype=np.int64), vectors, model_version)

    def __len__(self) -> int:
        return len(self.article_ids)


@dataclass(frozen=True, eq=False)
class ColdStartList:
    """The list served to users the store has no list for."""

    article_ids: tuple[str, ...]
    scores: np.ndarray
    computed_at: datetime
    model_version: str | None = None

    def __post_init__(self) -> None:
        _set_ranking(self)
        object.__setattr__(self, "computed_at", to_utc(self.computed_at))


# -- codec: one compact blob per list: a small orjson header, then float32 scores and vector ----

_MAGIC = b"NR1"
_HEADER = struct.Struct("<3sI")  # magic, header length (padded to a multiple of 4)


def _pack(header: dict[str, Any], *arrays: np.ndarray) -> bytes:
    text = orjson.dumps(header)
    text += b" " * (-len(text) % 4)  # keep the float32 arrays 4-byte aligned
    return b"".join([_HEADER.pack(_MAGIC, len(text)), text, *(a.tobytes() for a in arrays)])


def _unpack(blob: bytes) -> tuple[dict[str, Any], np.ndarray]:
    """The header and the float32s after it (read-only views of `blob`)."""
    magic, length = _HEADER.unpack_from(blob, 0)
    if magic != _MAGIC:
        raise StoreError(f"unknown record format {magic!r}")
    start = _HEADER.size + length
    return orjson.loads(blob[_HEADER.size : start]), np.frombuffer(blob, np.float32, offset=start)


def encode_record(record: UserRecommendations, capacity: int = DEFAULT_CAPACITY) -> bytes:
    """A list (its first `capacity` items) as one blob."""
    vector = record.user_vector
    header = {
        "ids": record.article_ids[:capacity],
        "mv": record.model_version,
        "layer": record.layer,
        "computed_at_us": to_us(record.computed_at),
        "watermark_us": to_us(record.watermark),
        "dim": -1 if vector is None else len(vector),
    }
    return _pack(header, record.scores[:capacity], *([] if vector is None else [vector]))


def decode_record(user_id: str, blob: bytes) -> UserRecommendations:
    """Inverse of `encode_record`."""
    header, floats = _unpack(blob)
    count, dim = len(header["ids"]), header["dim"]
    # Trusted data on the read path: fill the frozen instance without validating it again.
    record = object.__new__(UserRecommendations)
    record.__dict__.update(
        user_id=user_id,
        article_ids=tuple(header["ids"]),
        scores=floats[:count],
        model_version=header["mv"],
        layer=header["layer"],
        computed_at=from_us(header["computed_at_us"]),
        watermark=from_us(header["watermark_us"]),
        user_vector=None if dim < 0 else floats[count : count + dim],
    )
    return record


def encode_cold_start(cold_start: ColdStartList) -> bytes:
    header = {"ids": cold_start.article_ids, "mv": cold_start.model_version}
    return _pack(header | {"computed_at_us": to_us(cold_start.computed_at)}, cold_start.scores)


def decode_cold_start(blob: bytes) -> ColdStartList:
    header, floats = _unpack(blob)
    scores = floats[: len(header["ids"])]
    return ColdStartList(tuple(header["ids"]), scores, from_us(header["computed_at_us"]), header["mv"])


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


class _Closable:
    def close(self) -> None:
        """Release connections."""

    def __enter__(self):  # noqa: ANN204 - the adapter itself
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ListStore(_Closable, ABC):
    """Port of the recommendation lists; adapters `SQLiteListStore`, `RedisListStore` (thread-safe).
    They raise `StoreUnavailable` when the backend cannot be reached, `StoreError` for other
    failures, `ValueError` for bad arguments, and supply the steps (`_lease` ... `_drop_dominated`) of
    the publish protocol written here."""

    capacity: int = DEFAULT_CAPACITY
    _errors: Any  # the adapter's context manager turning its client's errors into the port's

    @abstractmethod
    def get_recommendations(self, user_id: str) -> UserRecommendations | None:
        """The list readers see for the user (newest watermark wins), or None for unknown users."""

    def put_recommendations(self, record: UserRecommendations) -> WriteResult:
        """Write one user's list (the speed layer's write); refused if its watermark is older."""
        blob = encode_record(record, self.capacity)
        with self._errors():
            accepted, seen_us = self._write_live(record.user_id, to_us(record.watermark), blob)
        return WriteResult(accepted, "written" if accepted else "stale_watermark", from_us_or_none(seen_us))

    @abstractmethod
    def _write_live(self, user_id: str, watermark_us: int, record: bytes) -> tuple[bool, int | None]:
        """Store a live list unless the reader sees a newer watermark: (accepted, the one it saw)."""

    def publish_batch(
        self,
        records: Iterable[UserRecommendations],
        *,
        model_version: str | None = None,
        chunk_size: int = 1000,
    ) -> PublishResult:
        """Publish every user's batch list (a generator is fine) as one new generation, atomically
        for readers, with `model_version` set in the same step; users missing from it have no batch
        list afterwards. Waits while another publish holds the lease."""
        with self._errors(), self._lease(wait=True) as lease:
            self._drop_staged()
            generation = self._new_generation(None)
            result = PublishResult(generation, published=False, reason="empty batch")
            try:
                _, newest_us = self._stage_records(generation, records, chunk_size, lease)
                if newest_us is not None:
                    result = self._publish(generation, newest_us, model_version, lease)
            finally:
                if not result.published:  # an error, a refusal: the staged rows go now
                    self._drop_generations([generation])
            return self._finished(result)

    def stage_shard(
        self,
        batch_key: str,
        shard: int,
        records: Iterable[UserRecommendations],
        *,
        model_version: str,
        chunk_size: int = 1000,
    ) -> StagedShard:
        """Stage one shard's lists under the batch `batch_key` (every shard of one batch names the
        same key), invisible until `publish_shards` flips the batch. Staging a shard again (a retry)
        replaces it; the shard counts as staged only once all its rows are written."""
        if not batch_key or shard < 0:
            raise ValueError("batch_key must be set and shard non-negative")
        with self._errors():
            generation = self._new_generation(batch_key)
            users, newest_us = self._stage_records(generation, records, chunk_size, None)
            self._mark_shard(generation, shard, (users, newest_us, model_version))
        watermark = None if newest_us is None else from_us(newest_us)
        return StagedShard(batch_key, generation, shard, users, watermark)

    def publish_shards(self, shards: int) -> PublishResult:
        """Flip the newest staged batch whose shards are exactly `0 .. shards - 1` (with the model
        version its shards staged); without one, nothing changes for readers."""
        if shards < 1:
            raise ValueError("shards must be at least 1")
        with self._errors(), self._lease(wait=True) as lease:
            staged = self._staged_shards()
            complete = [g for g, found in staged.items() if set(found) == set(range(shards))]
            if not complete:
                missing = {g: sorted(set(range(shards)) - set(found)) for g, found in staged.items()}
                return PublishResult(
                    0, False, f"no batch has all {shards} shards staged (missing: {missing})"
                )
            generation = max(complete)
            watermarks = [w for _, w, _ in staged[generation].values() if w is not None]
            if not watermarks:
                return PublishResult(generation, False, "empty batch")
            model_version = staged[generation][0][2]
            return self._finished(self._publish(generation, max(watermarks), model_version, lease))

    def _stage_records(
        self, generation: int, records: Iterable[UserRecommendations], chunk_size: int, lease: Any
    ) -> tuple[int, int | None]:
        """Stage records in chunks; returns (users, newest watermark µs or None when empty)."""
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        users, newest_us = 0, None
        for chunk in batched(records, chunk_size):
            rows = [(r.user_id, to_us(r.watermark), encode_record(r, self.capacity)) for r in chunk]
            newest_us = max([row[1] for row in rows] + ([] if newest_us is None else [newest_us]))
            self._stage(generation, rows, lease)
            users += len(rows)
        return users, newest_us

    def _publish(
        self, generation: int, newest_us: int, model_version: str | None, lease: Any
    ) -> PublishResult:
        users, refusal = self._flip(generation, newest_us, model_version, lease)
        return PublishResult(
            generation, refusal is None, refusal or "published", users, watermark=from_us(newest_us)
        )

    def _finished(self, result: PublishResult) -> PublishResult:
        """After a flip: drop the live lists and the generations the new generation supersedes."""
        if not result.published:
            return result
        kept = self._drop_dominated(result.generation)
        self._drop_generations([g for g in self._generation_states() if g < result.generation])
        return replace(result, speed_lists_kept=kept)

    def _drop_staged(self) -> int:
        """With the lease held: delete the generations `publish_batch` staged (their publishes are
        gone) and the sharded ones older than the current generation (they can never flip)."""
        states = self._generation_states()
        current = max((g for g, state in states.items() if state == "published"), default=0)
        staged = [
            g for g, state in states.items() if state == "staging" or (state == "sharded" and g < current)
        ]
        self._drop_generations(staged)
        return len(staged)

    def clean_abandoned(self) -> int:
        """Delete generations staged by publishes that died (never a running one); returns how many."""
        with self._errors(), self._lease(wait=False) as lease:
            return 0 if lease is None else self._drop_staged()

    @abstractmethod
    def _lease(self, wait: bool) -> AbstractContextManager[Any]:
        """Hold the publish lease (a token), or None when not waiting and another process holds it."""

    @abstractmethod
    def _generation_states(self) -> dict[int, str]:
        """Every generation described, with its state: 'staging', 'sharded' or 'published'."""

    @abstractmethod
    def _new_generation(self, batch_key: str | None) -> int:
        """Allocate the next generation number and record it as staging; for a sharded batch, the
        generation of `batch_key`, allocated by whichever of its shards comes first."""

    @abstractmethod
    def _stage(self, generation: int, rows: list[tuple[str, int, bytes]], lease: Any) -> None:
        """Write `(user_id, watermark_us, record)` rows into the staged generation (renewing the
        publish lease, if one is given)."""

    @abstractmethod
    def _mark_shard(self, generation: int, shard: int, staged: tuple[int, int | None, str]) -> None:
        """Record a shard as staged: `(users, newest watermark µs, model version)`."""

    @abstractmethod
    def _staged_shards(self) -> dict[int, dict[int, tuple[int, int | None, str]]]:
        """Per sharded generation still staging, its staged shards (see `_mark_shard`)."""

    @abstractmethod
    def _flip(
        self, generation: int, newest_us: int, model_version: str | None, lease: Any
    ) -> tuple[int, str | None]:
        """Make the staged generation current in one atomic step, unless a newer one is current:
        `(its users, None)`, or `(0, why not)`."""

    @abstractmethod
    def _drop_generations(self, generations: list[int]) -> None:
        """Delete these generations' rows and descriptions."""

    @abstractmethod
    def _drop_dominated(self, generation: int) -> int:
        """After the flip to `generation`: delete the live lists it dominates; returns those kept."""

    @abstractmethod
    def current_generation(self) -> GenerationInfo | None:
        """The published batch generation, or None before the first publish."""

    @abstractmethod
    def set_model_version(self, version: str) -> None:
        """Record the model version serving should consider current."""

    @abstractmethod
    def get_model_version(self) -> str | None:
        """The current model version, or None if none was set."""

    @abstractmethod
    def put_cold_start(self, cold_start: ColdStartList) -> None:
        """Replace the cold-start list."""

    @abstractmethod
    def get_cold_start(self) -> ColdStartList | None:
        """The cold-start list, or None if none was written."""

    @abstractmethod
    def add_recent_clicks(self, clicks: Iterable[tuple[str, str, int]]) -> None:
        """Record `(user_id, article_id, viewed_at_us)` clicks for the speed layer (kept once each)."""

    @abstractmethod
    def recent_clicks(self, user_ids: Sequence[str], after_us: int) -> dict[str, list[tuple[str, int]]]:
        """Per user, the `(article_id, viewed_at_us)` clicks newer than `after_us`, newest first."""

    @abstractmethod
    def forget_recent_clicks(self, before_us: int) -> int:
        """Drop clicks up to `before_us` (a published batch accounts for them); returns how many."""

    @abstractmethod
    def ping(self) -> None:
        """Raise `StoreUnavailable` unless the store can be read."""


class ArticleCache(_Closable, ABC):
    """Port of article metadata and vectors; adapters `SQLiteArticleCache`, `RedisArticleCache`."""

    @abstractmethod
    def upsert_articles(self, articles: Iterable[ArticleMeta]) -> int:
        """Insert or replace article metadata; returns the number written."""

    @abstractmethod
    def delete_articles(self, article_ids: Iterable[str]) -> int:
        """Remove articles (unpublished or deleted) and their vectors; returns the number given."""

    @abstractmethod
    def get_articles(self, article_ids: Sequence[str]) -> dict[str, ArticleMeta]:
        """Metadata of the given articles that the store knows, by id."""

    @abstractmethod
    def recent_articles(self, limit: int) -> list[ArticleMeta]:
        """The most recently published articles, newest first."""

    @abstractmethod
    def article_revision(self) -> int:
        """A counter that moves with every upsert or delete (0 before any): metadata caches drop
        what they hold when it moves."""

    @abstractmethod
    def put_article_vectors(self, article_ids: Sequence[str], vectors: np.ndarray, model_version: str) -> int:
        """Store article vectors (articles, dim) of one model version; returns the number written."""

    @abstractmethod
    def get_fresh_articles(self, published_after: datetime, model_version: str) -> FreshArticles:
        """Vectors of `model_version` for articles published strictly after `published_after`."""


def vector_rows(article_ids: Sequence[str], vectors: np.ndarray) -> list[tuple[str, bytes]]:
    """`(article_id, float32 bytes)` per article, checking the shapes agree."""
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(article_ids):
        raise ValueError(f"vectors must be [{len(article_ids)}, d], got {matrix.shape}")
    return [(str(article_id), matrix[i].tobytes()) for i, article_id in enumerate(article_ids)]
