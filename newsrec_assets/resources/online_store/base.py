"""The online store port: what the batch layer, the speed layer and the HTTP API need from it.

Per user the store holds one `UserRecommendations`: the ranked article ids (capacity 100 by
default), their scores, the model version, the layer that wrote it, when it was computed, the
event-time watermark it reflects, and the user vector (to score articles published later at read
time). Besides that: article metadata for serving, vectors of recent articles, the cold-start
list, the model version, the exposure log and the view counters of the API's event endpoint.

Two rules every adapter implements (DESIGN.md, data contract 6):

1. **Watermark rule.** A write whose watermark is older than the list the reader would currently
   see for that user is refused (`WriteResult.accepted` is False); with an equal watermark the
   later write wins. So the 30-minute batch can never undo a fresher speed-layer list.
2. **Atomic batch publish.** `publish_batch` makes all users' batch lists visible at once: a reader
   sees the whole previous generation or the whole new one, never a mix.

How both fit together (the same in every adapter):

- Batch lists live in *generations*. `publish_batch` stages a new generation under its own
  number, invisible to readers, in as many small write transactions as it needs (so speed writes
  never queue behind one long batch transaction), then flips a single `current generation`
  pointer in one short atomic step. The old generation is deleted after the flip.
- Speed-layer lists (`put_recommendations`) live in a separate *live* table, one row per user.
- Every accepted live write and every flip takes a number from one global write sequence.
- A reader resolves, in one atomic read, the current generation's row and the live row for the
  user and returns the one with the newer watermark; on an equal watermark the higher sequence
  number (the later write) wins. Because the resolution happens at read time, a speed write with
  watermark W2 that lands while a batch computed from events up to W1 < W2 is being published
  stays visible after the flip, whatever the interleaving; a live write older than the staged
  batch is superseded by the flip, as it should be.
- A write-time check refuses a write older than what the reader currently resolves to, and after
  a flip the live rows that the new generation dominates are deleted (each check-and-delete is
  atomic), which keeps the live table small.
- A publish whose generation is older than the current one (smaller number, or an older
  generation watermark = the newest event any of its lists reflects) is refused as a whole.

All times are UTC; naive datetimes are taken as UTC. Datetimes are stored as integer microseconds.
"""

from __future__ import annotations

import functools
import struct
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any, Literal, Protocol

import numpy as np
import orjson

Layer = Literal["batch", "speed"]
LAYERS: frozenset[str] = frozenset({"batch", "speed"})
DEFAULT_CAPACITY = 100

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class StoreError(Exception):
    """The online store failed to serve a request."""


class StoreUnavailable(StoreError):
    """The store cannot be reached (connection refused, file missing, locked past the timeout)."""


class ReadOnlyStore(StoreError):
    """A write was attempted through a read-only handle."""


# ----------------------------------------------------------------------------------------------
# time helpers


def to_utc(moment: datetime) -> datetime:
    """An aware UTC datetime; naive datetimes are taken as UTC."""
    if not isinstance(moment, datetime):
        raise TypeError(f"expected a datetime, got {type(moment).__name__}")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def to_us(moment: datetime) -> int:
    """Integer microseconds since the epoch (exact, unlike `datetime.timestamp()`)."""
    return (to_utc(moment) - _EPOCH) // timedelta(microseconds=1)


def from_us(micros: int) -> datetime:
    """The aware UTC datetime of integer microseconds since the epoch."""
    return _EPOCH + timedelta(microseconds=int(micros))


def now_utc() -> datetime:
    return datetime.now(UTC)


# ----------------------------------------------------------------------------------------------
# records


def _float32_vector(values: Any, name: str) -> np.ndarray:
    array = np.ascontiguousarray(np.asarray(values, dtype=np.float32).reshape(-1))
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class UserRecommendations:
    """One user's ranked list as the online store keeps it.

    `watermark` is the event time of the newest behaviour event the list accounts for; the
    watermark rule compares it. `user_vector` (float32) lets the API score articles published
    after `computed_at`. Scores must be finite; the list is taken as ranked, best first.
    """

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
        set_(self, "article_ids", tuple(str(article_id) for article_id in self.article_ids))
        set_(self, "scores", _float32_vector(self.scores, "scores"))
        if len(self.article_ids) != len(self.scores):
            raise ValueError(f"{len(self.article_ids)} article ids but {len(self.scores)} scores")
        if len(set(self.article_ids)) != len(self.article_ids):
            raise ValueError("article_ids must be distinct")
        if self.layer not in LAYERS:
            raise ValueError(f"layer must be one of {sorted(LAYERS)}, got {self.layer!r}")
        if not self.model_version:
            raise ValueError("model_version must be set")
        set_(self, "computed_at", to_utc(self.computed_at))
        set_(self, "watermark", to_utc(self.watermark))
        if self.user_vector is not None:
            set_(self, "user_vector", _float32_vector(self.user_vector, "user_vector"))

    def truncated(self, capacity: int) -> UserRecommendations:
        """The same record holding at most `capacity` items."""
        if len(self.article_ids) <= capacity:
            return self
        return UserRecommendations(
            user_id=self.user_id,
            article_ids=self.article_ids[:capacity],
            scores=self.scores[:capacity],
            model_version=self.model_version,
            layer=self.layer,
            computed_at=self.computed_at,
            watermark=self.watermark,
            user_vector=self.user_vector,
        )


@dataclass(frozen=True)
class WriteResult:
    """Outcome of a per-user write. `stored_watermark` is what the reader saw before the write."""

    accepted: bool
    reason: Literal["written", "stale_watermark"]
    stored_watermark: datetime | None = None


@dataclass(frozen=True)
class PublishResult:
    """Outcome of a batch publish.

    `speed_lists_kept` counts users whose speed-layer list reflects newer events than the batch
    list and therefore stays what readers see.
    """

    generation: int
    published: bool
    reason: str
    users_written: int = 0
    speed_lists_kept: int = 0
    watermark: datetime | None = None


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
    def empty(cls, model_version: str, dim: int = 0) -> FreshArticles:
        return cls(
            article_ids=np.empty(0, dtype=str),
            published_at_us=np.empty(0, dtype=np.int64),
            vectors=np.empty((0, dim), dtype=np.float32),
            model_version=model_version,
        )

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
        object.__setattr__(self, "article_ids", tuple(str(article_id) for article_id in self.article_ids))
        object.__setattr__(self, "scores", _float32_vector(self.scores, "scores"))
        if len(self.article_ids) != len(self.scores):
            raise ValueError(f"{len(self.article_ids)} article ids but {len(self.scores)} scores")
        object.__setattr__(self, "computed_at", to_utc(self.computed_at))


@dataclass(frozen=True)
class ModelVersion:
    """The model version that serving should consider current, with free-form metadata."""

    version: str
    updated_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ViewCount:
    """A (user, article) view counter after one more view, for the API's change records.

    `log_position` is a store-wide monotonic counter (the `api-events` log position).
    """

    user_id: str
    article_id: str
    view_count: int
    first_viewed_at: datetime
    last_viewed_at: datetime
    log_position: int


@dataclass(frozen=True)
class Exposure:
    """One served list. `cursor` orders exposures; pass it to `read_exposures(after=...)`.
    `position` orders them too, as a non-negative integer below 2**53 (a log position)."""

    cursor: str
    request_id: str
    user_id: str
    article_ids: tuple[str, ...]
    served_at: datetime
    position: int


# ----------------------------------------------------------------------------------------------
# codec: one compact blob per user list


_MAGIC = b"NR1"
_HEADER = struct.Struct("<3sI")  # magic, header length (bytes, padded to a multiple of 4)


def encode_record(record: UserRecommendations) -> bytes:
    """Serialise a list to one blob: a small orjson header, then float32 scores and user vector."""
    dim = -1 if record.user_vector is None else len(record.user_vector)
    header = orjson.dumps(
        {
            "ids": record.article_ids,
            "mv": record.model_version,
            "layer": record.layer,
            "computed_at_us": to_us(record.computed_at),
            "watermark_us": to_us(record.watermark),
            "dim": dim,
        }
    )
    header += b" " * (-len(header) % 4)  # keep the float32 arrays 4-byte aligned
    parts = [_HEADER.pack(_MAGIC, len(header)), header, record.scores.tobytes()]
    if record.user_vector is not None:
        parts.append(record.user_vector.tobytes())
    return b"".join(parts)


@functools.lru_cache(maxsize=4096)
def _moment(micros: int) -> datetime:
    """`from_us`, remembered: the lists of one batch share their timestamps (datetimes are immutable)."""
    return from_us(micros)


def decode_record(user_id: str, blob: bytes) -> UserRecommendations:
    """Inverse of `encode_record`."""
    magic, header_len = _HEADER.unpack_from(blob, 0)
    if magic != _MAGIC:
        raise StoreError(f"unknown record format {magic!r}")
    start = _HEADER.size
    header = orjson.loads(blob[start : start + header_len])
    offset = start + header_len
    count = len(header["ids"])
    scores = np.frombuffer(blob, dtype=np.float32, count=count, offset=offset)
    dim = header["dim"]
    vector = None
    if dim >= 0:
        vector = np.frombuffer(blob, dtype=np.float32, count=dim, offset=offset + 4 * count)
    # Trusted data: skip validation on the read path, and fill the frozen instance's fields in
    # one dict update rather than one object.__setattr__ each.
    record = object.__new__(UserRecommendations)
    record.__dict__.update(
        user_id=user_id,
        article_ids=tuple(header["ids"]),
        scores=scores,
        model_version=header["mv"],
        layer=header["layer"],
        computed_at=_moment(header["computed_at_us"]),
        watermark=_moment(header["watermark_us"]),
        user_vector=vector,
    )
    return record


def encode_cold_start(cold_start: ColdStartList) -> bytes:
    header = orjson.dumps(
        {
            "ids": cold_start.article_ids,
            "mv": cold_start.model_version,
            "computed_at_us": to_us(cold_start.computed_at),
        }
    )
    header += b" " * (-len(header) % 4)
    return _HEADER.pack(_MAGIC, len(header)) + header + cold_start.scores.tobytes()


def decode_cold_start(blob: bytes) -> ColdStartList:
    _, header_len = _HEADER.unpack_from(blob, 0)
    header = orjson.loads(blob[_HEADER.size : _HEADER.size + header_len])
    scores = np.frombuffer(blob, dtype=np.float32, count=len(header["ids"]), offset=_HEADER.size + header_len)
    return ColdStartList(
        article_ids=tuple(header["ids"]),
        scores=scores,
        computed_at=from_us(header["computed_at_us"]),
        model_version=header["mv"],
    )


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


# ----------------------------------------------------------------------------------------------
# the port


class AsyncReads(Protocol):
    """`OnlineStore.async_reads`: the read path, awaitable, bound to the event loop it runs on."""

    async def get_recommendations(self, user_id: str) -> UserRecommendations | None: ...

    def close(self) -> None: ...


class OnlineStore(ABC):
    """Port of the online store. Adapters: `SQLiteOnlineStore`, `RedisOnlineStore`.

    Methods raise `StoreUnavailable` when the backend cannot be reached, `StoreError` for other
    backend failures and `ValueError` for invalid arguments. Adapters are safe to share between
    threads.
    """

    capacity: int = DEFAULT_CAPACITY
    # The most exposures one `log_exposures` call should carry: callers with more split them.
    # A backend that serves other clients one command at a time (Redis) keeps this small, so
    # that reads are served between the calls instead of waiting for a whole batch.
    exposures_per_call: int = 1000

    # -- recommendations -----------------------------------------------------------------------

    @abstractmethod
    def get_recommendations(self, user_id: str) -> UserRecommendations | None:
        """The list readers see for the user (newest watermark wins), or None for unknown users."""

    def async_reads(self) -> AsyncReads | None:
        """Reads that an asyncio server can await without blocking its event loop, where the
        backend has them (a networked store); None: call `get_recommendations`."""
        return None

    @abstractmethod
    def put_recommendations(self, record: UserRecommendations) -> WriteResult:
        """Write one user's list (the speed layer's write); refused if its watermark is older."""

    @abstractmethod
    def publish_batch(
        self,
        records: Iterable[UserRecommendations],
        *,
        model_version: str | None = None,
        chunk_size: int = 1000,
    ) -> PublishResult:
        """Publish every user's batch list as one new generation, atomically for readers.

        `records` may be a generator (it is consumed once, in chunks of `chunk_size`). Users
        missing from it have no batch list afterwards. With `model_version`, the store's current
        model version is set in the same atomic step as the flip.
        """

    @abstractmethod
    def current_generation(self) -> GenerationInfo | None:
        """The published batch generation, or None before the first publish."""

    # -- model version -------------------------------------------------------------------------

    @abstractmethod
    def set_model_version(self, version: str, metadata: dict[str, Any] | None = None) -> None:
        """Record the model version serving should consider current."""

    @abstractmethod
    def get_model_version(self) -> ModelVersion | None:
        """The current model version, or None if none was set."""

    # -- articles ------------------------------------------------------------------------------

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
        """A counter that grows with every `upsert_articles` / `delete_articles` (0 before any).

        Readers that cache article metadata compare it to know when their cache went stale.
        """

    @abstractmethod
    def put_article_vectors(self, article_ids: Sequence[str], vectors: np.ndarray, model_version: str) -> int:
        """Store article vectors (articles, dim) of one model version; returns the number written."""

    @abstractmethod
    def get_fresh_articles(self, published_after: datetime, model_version: str) -> FreshArticles:
        """Vectors of `model_version` for articles published strictly after `published_after`."""

    @abstractmethod
    def prune_article_vectors(self, published_before: datetime) -> int:
        """Drop vectors of articles published before the given time (or without metadata)."""

    # -- cold start ----------------------------------------------------------------------------

    @abstractmethod
    def put_cold_start(self, cold_start: ColdStartList) -> None:
        """Replace the cold-start list."""

    @abstractmethod
    def get_cold_start(self) -> ColdStartList | None:
        """The cold-start list, or None if none was written."""

    # -- logs written by the API ---------------------------------------------------------------

    @abstractmethod
    def log_exposure(
        self, user_id: str, article_ids: Sequence[str], served_at: datetime, request_id: str
    ) -> None:
        """Append what was served to whom (data contract 3)."""

    def log_exposures(self, exposures: Iterable[tuple[str, Sequence[str], datetime, str]]) -> int:
        """Append many `(user_id, article_ids, served_at, request_id)` exposures; returns the count.

        Adapters override this with one round trip / transaction.
        """
        count = 0
        for user_id, article_ids, served_at, request_id in exposures:
            self.log_exposure(user_id, article_ids, served_at, request_id)
            count += 1
        return count

    @abstractmethod
    def read_exposures(self, after: str | None = None, limit: int = 1000) -> list[Exposure]:
        """Exposures after the cursor `after` (from the start if None), oldest first."""

    @abstractmethod
    def trim_exposures(self, up_to: str) -> int:
        """Delete exposures up to and including cursor `up_to` (after shipping them)."""

    @abstractmethod
    def record_view(self, user_id: str, article_id: str, viewed_at: datetime) -> ViewCount:
        """Count one more view of the article by the user and take the next API log position."""

    # -- lifecycle -----------------------------------------------------------------------------

    @abstractmethod
    def ping(self) -> None:
        """Raise `StoreUnavailable` unless the store can be read."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> OnlineStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
