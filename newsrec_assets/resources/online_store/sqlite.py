"""SQLite adapter of the online store: the embedded default (one file, WAL mode).

Concurrency model
-----------------
- WAL journal: readers never block the writer and the writer never blocks readers; every
  statement reads one consistent snapshot. Writers serialise on SQLite's write lock and wait up to
  `busy_timeout_ms` for it. The store is meant for one writing process at a time (the Dagster
  run that publishes) plus any number of reading processes (API workers); concurrent writers are
  still correct, only serialised.
- Each thread (and each process, after a fork) gets its own connection, opened lazily and kept.
  `read_only=True` opens the lists file with `mode=ro`, as the API does.
- The exposure log and the API view counters live in a second file (`<name>-log<suffix>`), so
  the API's appends never queue behind a batch publish for the write lock, and vice versa.

Tables (lists file)
-------------------
- `batch_recs(generation, user_id, watermark_us, record)`: batch lists, one blob per user per
  generation; `current_generation` (one row: generation, seq) is the pointer readers follow;
  `generations` describes each generation (state staging/published/refused).
- `live_recs(user_id, watermark_us, seq, record)`: lists written by `put_recommendations`.
- `meta`: the global write sequence `write_seq` and `article_revision` (bumped with every
  article upsert or delete). Plus `model_version`, `articles`,
  `article_vectors`, `cold_start`.

Atomicity (see `base` for the rules)
------------------------------------
- A read is one SQL statement over the live row and the current generation's row (`_READ_SQL`),
  ordered by (watermark, seq): one snapshot, so it never mixes generations.
- `put_recommendations` runs in one `BEGIN IMMEDIATE` transaction: resolve what a reader sees,
  refuse if older, else take the next write sequence number and upsert the live row.
- `publish_batch` stages rows under a new generation number in small transactions, then flips
  `current_generation` in one short transaction (refusing if a newer generation is current), then
  deletes the live rows that the new generation dominates (one statement) and the old
  generations' rows (in chunks).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import numpy as np
import orjson

from newsrec_assets.resources.online_store.base import (
    DEFAULT_CAPACITY,
    ArticleMeta,
    ColdStartList,
    Exposure,
    FreshArticles,
    GenerationInfo,
    ModelVersion,
    OnlineStore,
    PublishResult,
    ReadOnlyStore,
    StoreError,
    StoreUnavailable,
    UserRecommendations,
    ViewCount,
    WriteResult,
    batched,
    decode_cold_start,
    decode_record,
    encode_cold_start,
    encode_record,
    from_us,
    now_utc,
    to_us,
)

T = TypeVar("T")

_LISTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (key, value) VALUES ('write_seq', 0), ('schema_version', 1);
CREATE TABLE IF NOT EXISTS current_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS generations (
    generation INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    watermark_us INTEGER,
    model_version TEXT,
    users INTEGER NOT NULL DEFAULT 0,
    seq INTEGER,
    started_at_us INTEGER NOT NULL,
    published_at_us INTEGER
);
CREATE TABLE IF NOT EXISTS batch_recs (
    generation INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    watermark_us INTEGER NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (generation, user_id)
);
CREATE TABLE IF NOT EXISTS live_recs (
    user_id TEXT PRIMARY KEY,
    watermark_us INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    record BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS model_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version TEXT NOT NULL,
    metadata TEXT NOT NULL,
    updated_at_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS articles (
    article_id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    category TEXT NOT NULL,
    subcategory TEXT NOT NULL,
    published_at_us INTEGER NOT NULL,
    url TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS articles_by_published ON articles (published_at_us);
CREATE TABLE IF NOT EXISTS article_vectors (
    article_id TEXT PRIMARY KEY,
    model_version TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS cold_start (id INTEGER PRIMARY KEY CHECK (id = 1), record BLOB NOT NULL);
"""

_BUMP_ARTICLE_REVISION_SQL = (
    "INSERT INTO meta (key, value) VALUES ('article_revision', 1) "
    "ON CONFLICT (key) DO UPDATE SET value = value + 1"
)

_LOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS exposures (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    article_ids TEXT NOT NULL,
    served_at_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS view_counters (
    user_id TEXT NOT NULL,
    article_id TEXT NOT NULL,
    view_count INTEGER NOT NULL,
    first_viewed_at_us INTEGER NOT NULL,
    last_viewed_at_us INTEGER NOT NULL,
    PRIMARY KEY (user_id, article_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
"""

# The candidates for the list a reader sees: the live row and the current generation's row (one
# statement, so one snapshot). `_seen` picks the newest watermark, then the later write (higher
# sequence number); picking in Python saves SQLite a sorter per read.
_CANDIDATES_SQL = """
SELECT record, watermark_us, seq FROM live_recs WHERE user_id = ?1
UNION ALL
SELECT b.record, b.watermark_us, c.seq
FROM current_generation AS c
JOIN batch_recs AS b ON b.generation = c.generation AND b.user_id = ?1
"""


def _seen(rows: list[tuple[Any, ...]]) -> tuple[Any, ...] | None:
    """The row a reader sees among `_CANDIDATES_SQL`'s (record, watermark_us, seq) rows."""
    if len(rows) < 2:
        return rows[0] if rows else None
    return max(rows, key=lambda row: (row[1], row[2]))


_NEXT_SEQ_SQL = "UPDATE meta SET value = value + 1 WHERE key = 'write_seq' RETURNING value"

# Live rows that the current generation's row dominates (newer watermark, or equal and later).
_DROP_DOMINATED_SQL = """
DELETE FROM live_recs
WHERE rowid IN (
    SELECT l.rowid
    FROM live_recs AS l
    JOIN current_generation AS c
    JOIN batch_recs AS b ON b.generation = c.generation AND b.user_id = l.user_id
    WHERE b.watermark_us > l.watermark_us OR (b.watermark_us = l.watermark_us AND c.seq > l.seq)
)
"""

_COUNT_KEPT_SQL = """
SELECT count(*)
FROM live_recs AS l
JOIN batch_recs AS b ON b.generation = ?1 AND b.user_id = l.user_id
"""

_CLEANUP_CHUNK = 5000
_PAGE_BYTES = 16384
_MMAP_BYTES = 2**31


def default_log_path(path: Path) -> Path:
    """Where the exposure log and view counters of a lists file live."""
    return path.with_name(f"{path.stem}-log{path.suffix or '.sqlite'}")


@contextmanager
def _transaction(conn: sqlite3.Connection, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
    conn.execute(f"BEGIN {mode}")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as error:
        raise _store_error(error) from error


def _store_error(error: sqlite3.Error) -> StoreError:
    """The port's error for a SQLite one."""
    if isinstance(error, sqlite3.OperationalError):  # locked past the timeout, cannot open, I/O
        return StoreUnavailable(f"sqlite: {error}")
    return StoreError(f"sqlite: {error}")


class SQLiteOnlineStore(OnlineStore):
    """Online store in a SQLite file (WAL). See the module docstring for the concurrency model.

    Args:
        path: the lists file; created with its schema unless `read_only`.
        read_only: open the lists file read-only (API workers). The log file is always writable.
        log_path: the exposure log / view counter file (default `<stem>-log<suffix>` next to path).
        capacity: items kept per user list.
        busy_timeout_ms: how long a connection waits for a lock before failing.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        read_only: bool = False,
        log_path: str | os.PathLike[str] | None = None,
        capacity: int = DEFAULT_CAPACITY,
        busy_timeout_ms: int = 5000,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.path = Path(path)
        self.log_path = Path(log_path) if log_path is not None else default_log_path(self.path)
        self.read_only = read_only
        self.capacity = capacity
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._all_connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._schema_ready = False
        self._log_schema_ready = False
        if not read_only:
            self._lists()  # create the file and schema now, so readers can open it read-only

    # -- connections ---------------------------------------------------------------------------

    def _connect(self, path: Path, read_only: bool, schema: str | None) -> sqlite3.Connection:
        with _errors():
            if read_only:
                if not path.exists():
                    raise StoreUnavailable(f"sqlite: online store file {path} does not exist")
                uri = f"file:{quote(str(path.resolve()))}?mode=ro"
                conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(
                    path, timeout=self.busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
                )
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            if read_only:
                conn.execute("PRAGMA query_only = 1")
                # Map the file (SQLite caps the mapping at 2 GB): a lookup then reads its pages
                # in place instead of one read() and copy per page.
                conn.execute(f"PRAGMA mmap_size = {_MMAP_BYTES}")
            else:
                # One thread at a time: on a new file, switching it to WAL fails at once (the busy
                # timeout does not apply) while another connection is doing the same.
                with self._connections_lock:
                    # Only takes effect on a new file. A list record is ~2 KB: on 4 KB pages each
                    # takes a page of its own, on 16 KB pages seven share one (1M users: 2.4 GB
                    # instead of 3.8 GB, so more of the store stays in memory).
                    conn.execute(f"PRAGMA page_size = {_PAGE_BYTES}")
                    conn.execute("PRAGMA journal_mode = WAL")
                    conn.execute("PRAGMA synchronous = NORMAL")
                    if schema is not None:
                        conn.executescript(schema)
        with self._connections_lock:
            self._all_connections.append(conn)
        return conn

    def _per_thread(self, name: str, make: Callable[[], T]) -> T:
        """This thread's `name` (a connection, a cursor), made by `make` on first use."""
        local = self._local
        pid = os.getpid()
        if getattr(local, "pid", None) != pid:  # new thread, or a forked child: open afresh
            local.__dict__.clear()
            local.pid = pid
        value = local.__dict__.get(name)
        if value is None:
            value = local.__dict__[name] = make()
        return value

    def _lists(self) -> sqlite3.Connection:
        """This thread's connection to the lists file."""
        return self._per_thread("lists", lambda: self._connect(self.path, self.read_only, _LISTS_SCHEMA))

    def _list_reader(self) -> sqlite3.Cursor:
        """This thread's cursor for list lookups, kept: creating a cursor per lookup cost about
        a fifth of the lookup."""
        return self._per_thread("list_reader", lambda: self._lists().cursor())

    def _writer(self) -> sqlite3.Connection:
        if self.read_only:
            raise ReadOnlyStore(f"{self.path} was opened read-only")
        return self._lists()

    def _log(self) -> sqlite3.Connection:
        """This thread's connection to the log file (always writable)."""
        return self._per_thread("log", lambda: self._connect(self.log_path, False, _LOG_SCHEMA))

    def close(self) -> None:
        with self._connections_lock:
            connections, self._all_connections = self._all_connections, []
        for conn in connections:
            with suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()

    def ping(self) -> None:
        with _errors():
            self._lists().execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()

    # -- recommendations -----------------------------------------------------------------------

    def get_recommendations(self, user_id: str) -> UserRecommendations | None:
        # The API's hot path: plain try/except, since `with _errors()` costs a generator per call.
        try:
            row = _seen(self._list_reader().execute(_CANDIDATES_SQL, (user_id,)).fetchall())
        except sqlite3.Error as error:
            raise _store_error(error) from error
        return None if row is None else decode_record(user_id, row[0])

    def put_recommendations(self, record: UserRecommendations) -> WriteResult:
        record = record.truncated(self.capacity)
        watermark_us = to_us(record.watermark)
        blob = encode_record(record)
        with _errors():
            conn = self._writer()
            with _transaction(conn):
                current = _seen(conn.execute(_CANDIDATES_SQL, (record.user_id,)).fetchall())
                stored = None if current is None else from_us(current[1])
                if current is not None and watermark_us < current[1]:
                    return WriteResult(accepted=False, reason="stale_watermark", stored_watermark=stored)
                (seq,) = conn.execute(_NEXT_SEQ_SQL).fetchall()[0]
                conn.execute(
                    "INSERT INTO live_recs (user_id, watermark_us, seq, record) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (user_id) DO UPDATE SET watermark_us = excluded.watermark_us, "
                    "seq = excluded.seq, record = excluded.record",
                    (record.user_id, watermark_us, seq, blob),
                )
        return WriteResult(accepted=True, reason="written", stored_watermark=stored)

    def publish_batch(
        self,
        records: Iterable[UserRecommendations],
        *,
        model_version: str | None = None,
        chunk_size: int = 1000,
    ) -> PublishResult:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        with _errors():
            conn = self._writer()
            with _transaction(conn):
                (generation,) = conn.execute(
                    "SELECT coalesce(max(generation), 0) + 1 FROM generations"
                ).fetchone()
                conn.execute(
                    "INSERT INTO generations (generation, state, started_at_us) VALUES (?, 'staging', ?)",
                    (generation, to_us(now_utc())),
                )
            try:
                result = self._stage_and_flip(conn, generation, records, model_version, chunk_size)
            except BaseException:
                with suppress(StoreError, sqlite3.Error):  # keep the original error
                    self._drop_generation(conn, generation, state="failed")
                raise
            if not result.published:
                self._drop_generation(conn, generation, state="refused")
                return result
            with _transaction(conn):
                conn.execute(_DROP_DOMINATED_SQL)
                (kept,) = conn.execute(_COUNT_KEPT_SQL, (generation,)).fetchone()
            self._drop_generations_before(conn, generation)
        return PublishResult(
            generation=generation,
            published=True,
            reason=result.reason,
            users_written=result.users_written,
            speed_lists_kept=kept,
            watermark=result.watermark,
        )

    def _stage_and_flip(
        self,
        conn: sqlite3.Connection,
        generation: int,
        records: Iterable[UserRecommendations],
        model_version: str | None,
        chunk_size: int,
    ) -> PublishResult:
        newest_us: int | None = None
        for chunk in batched(records, chunk_size):
            rows = []
            for record in chunk:
                watermark_us = to_us(record.watermark)
                newest_us = watermark_us if newest_us is None else max(newest_us, watermark_us)
                rows.append(
                    (generation, record.user_id, watermark_us, encode_record(record.truncated(self.capacity)))
                )
            with _transaction(conn):
                conn.executemany(
                    "INSERT OR REPLACE INTO batch_recs (generation, user_id, watermark_us, record) "
                    "VALUES (?, ?, ?, ?)",
                    rows,
                )
        watermark = None if newest_us is None else from_us(newest_us)
        with _transaction(conn):
            (users,) = conn.execute(
                "SELECT count(*) FROM batch_recs WHERE generation = ?", (generation,)
            ).fetchone()
            if users == 0:
                return PublishResult(generation, published=False, reason="empty batch")
            current = conn.execute(
                "SELECT c.generation, g.watermark_us FROM current_generation AS c "
                "JOIN generations AS g USING (generation)"
            ).fetchone()
            if current is not None and current[0] > generation:
                reason = f"generation {current[0]} is newer and already published"
                return PublishResult(generation, published=False, reason=reason, watermark=watermark)
            if current is not None and current[1] is not None and newest_us < current[1]:
                reason = f"generation {current[0]} reflects newer events ({from_us(current[1]).isoformat()})"
                return PublishResult(generation, published=False, reason=reason, watermark=watermark)
            (seq,) = conn.execute(_NEXT_SEQ_SQL).fetchall()[0]
            now_us = to_us(now_utc())
            conn.execute(
                "INSERT OR REPLACE INTO current_generation (id, generation, seq) VALUES (1, ?, ?)",
                (generation, seq),
            )
            conn.execute(
                "UPDATE generations SET state = 'published', watermark_us = ?, model_version = ?, "
                "users = ?, seq = ?, published_at_us = ? WHERE generation = ?",
                (newest_us, model_version, users, seq, now_us, generation),
            )
            if model_version is not None:
                self._write_model_version(conn, model_version, None, now_us)
        return PublishResult(
            generation, published=True, reason="published", users_written=users, watermark=watermark
        )

    def _drop_generation(self, conn: sqlite3.Connection, generation: int, state: str) -> None:
        """Delete a staged generation's rows (in chunks) and mark it."""
        self._delete_batch_rows(conn, "generation = ?", (generation,))
        with _transaction(conn):
            conn.execute("UPDATE generations SET state = ? WHERE generation = ?", (state, generation))

    def _drop_generations_before(self, conn: sqlite3.Connection, generation: int) -> None:
        self._delete_batch_rows(conn, "generation < ?", (generation,))
        with _transaction(conn):
            conn.execute("DELETE FROM generations WHERE generation < ?", (generation,))

    @staticmethod
    def _delete_batch_rows(conn: sqlite3.Connection, where: str, params: tuple[Any, ...]) -> None:
        sql = (
            f"DELETE FROM batch_recs WHERE rowid IN "
            f"(SELECT rowid FROM batch_recs WHERE {where} LIMIT {_CLEANUP_CHUNK})"
        )
        while True:
            with _transaction(conn):
                deleted = conn.execute(sql, params).rowcount
            if deleted < _CLEANUP_CHUNK:
                return

    def current_generation(self) -> GenerationInfo | None:
        with _errors():
            row = (
                self._lists()
                .execute(
                    "SELECT g.generation, g.watermark_us, g.model_version, g.users, g.published_at_us "
                    "FROM current_generation AS c JOIN generations AS g USING (generation)"
                )
                .fetchone()
            )
        if row is None:
            return None
        return GenerationInfo(
            generation=row[0],
            watermark=None if row[1] is None else from_us(row[1]),
            model_version=row[2],
            users=row[3],
            published_at=None if row[4] is None else from_us(row[4]),
        )

    # -- model version -------------------------------------------------------------------------

    @staticmethod
    def _write_model_version(
        conn: sqlite3.Connection, version: str, metadata: dict[str, Any] | None, now_us: int
    ) -> None:
        conn.execute(
            # Without new metadata, the metadata of the same version is kept.
            "INSERT INTO model_version (id, version, metadata, updated_at_us) "
            "VALUES (1, ?1, coalesce(?2, '{}'), ?3) "
            "ON CONFLICT (id) DO UPDATE SET version = ?1, updated_at_us = ?3, metadata = "
            "CASE WHEN ?2 IS NOT NULL THEN ?2 WHEN version = ?1 THEN metadata ELSE '{}' END",
            (version, None if metadata is None else orjson.dumps(metadata).decode(), now_us),
        )

    def set_model_version(self, version: str, metadata: dict[str, Any] | None = None) -> None:
        if not version:
            raise ValueError("version must be set")
        with _errors():
            conn = self._writer()
            with _transaction(conn):
                self._write_model_version(conn, version, metadata, to_us(now_utc()))

    def get_model_version(self) -> ModelVersion | None:
        with _errors():
            row = (
                self._lists()
                .execute("SELECT version, metadata, updated_at_us FROM model_version WHERE id = 1")
                .fetchone()
            )
        if row is None:
            return None
        return ModelVersion(version=row[0], metadata=orjson.loads(row[1]), updated_at=from_us(row[2]))

    # -- articles ------------------------------------------------------------------------------

    def upsert_articles(self, articles: Iterable[ArticleMeta]) -> int:
        rows = [
            (a.article_id, a.title, a.category, a.subcategory, to_us(a.published_at), a.url) for a in articles
        ]
        with _errors():
            conn = self._writer()
            with _transaction(conn):
                conn.executemany(
                    "INSERT OR REPLACE INTO articles "
                    "(article_id, title, category, subcategory, published_at_us, url) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                conn.execute(_BUMP_ARTICLE_REVISION_SQL)
        return len(rows)

    def delete_articles(self, article_ids: Iterable[str]) -> int:
        ids = [(article_id,) for article_id in article_ids]
        with _errors():
            conn = self._writer()
            with _transaction(conn):
                conn.executemany("DELETE FROM articles WHERE article_id = ?", ids)
                conn.executemany("DELETE FROM article_vectors WHERE article_id = ?", ids)
                conn.execute(_BUMP_ARTICLE_REVISION_SQL)
        return len(ids)

    def get_articles(self, article_ids: Sequence[str]) -> dict[str, ArticleMeta]:
        if not article_ids:
            return {}
        found: dict[str, ArticleMeta] = {}
        with _errors():
            conn = self._lists()
            for chunk in batched(article_ids, 500):
                placeholders = ",".join("?" * len(chunk))
                for row in conn.execute(
                    "SELECT article_id, title, category, subcategory, published_at_us, url "
                    f"FROM articles WHERE article_id IN ({placeholders})",
                    chunk,
                ):
                    found[row[0]] = _article(row)
        return found

    def article_revision(self) -> int:
        with _errors():
            row = self._lists().execute("SELECT value FROM meta WHERE key = 'article_revision'").fetchone()
        return 0 if row is None else int(row[0])

    def recent_articles(self, limit: int) -> list[ArticleMeta]:
        with _errors():
            rows = (
                self._lists()
                .execute(
                    "SELECT article_id, title, category, subcategory, published_at_us, url "
                    "FROM articles ORDER BY published_at_us DESC, article_id LIMIT ?",
                    (limit,),
                )
                .fetchall()
            )
        return [_article(row) for row in rows]

    def put_article_vectors(self, article_ids: Sequence[str], vectors: np.ndarray, model_version: str) -> int:
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != len(article_ids):
            raise ValueError(f"vectors must be [{len(article_ids)}, d], got {matrix.shape}")
        rows = [(str(a), model_version, matrix[i].tobytes()) for i, a in enumerate(article_ids)]
        with _errors():
            conn = self._writer()
            with _transaction(conn):
                conn.executemany(
                    "INSERT OR REPLACE INTO article_vectors (article_id, model_version, vector) "
                    "VALUES (?, ?, ?)",
                    rows,
                )
        return len(rows)

    def get_fresh_articles(self, published_after: datetime, model_version: str) -> FreshArticles:
        with _errors():
            rows = (
                self._lists()
                .execute(
                    "SELECT a.article_id, a.published_at_us, v.vector FROM articles AS a "
                    "JOIN article_vectors AS v USING (article_id) "
                    "WHERE a.published_at_us > ? AND v.model_version = ? "
                    "ORDER BY a.published_at_us, a.article_id",
                    (to_us(published_after), model_version),
                )
                .fetchall()
            )
        if not rows:
            return FreshArticles.empty(model_version)
        ids, published, blobs = zip(*rows, strict=True)
        vectors = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(rows), -1)
        return FreshArticles(
            article_ids=np.asarray(ids, dtype=str),
            published_at_us=np.asarray(published, dtype=np.int64),
            vectors=vectors,
            model_version=model_version,
        )

    def prune_article_vectors(self, published_before: datetime) -> int:
        with _errors():
            conn = self._writer()
            with _transaction(conn):
                return conn.execute(
                    "DELETE FROM article_vectors WHERE article_id NOT IN "
                    "(SELECT article_id FROM articles WHERE published_at_us >= ?)",
                    (to_us(published_before),),
                ).rowcount

    # -- cold start ----------------------------------------------------------------------------

    def put_cold_start(self, cold_start: ColdStartList) -> None:
        with _errors():
            conn = self._writer()
            with _transaction(conn):
                conn.execute(
                    "INSERT OR REPLACE INTO cold_start (id, record) VALUES (1, ?)",
                    (encode_cold_start(cold_start),),
                )

    def get_cold_start(self) -> ColdStartList | None:
        with _errors():
            row = self._lists().execute("SELECT record FROM cold_start WHERE id = 1").fetchone()
        return None if row is None else decode_cold_start(row[0])

    # -- logs ----------------------------------------------------------------------------------

    def log_exposure(
        self, user_id: str, article_ids: Sequence[str], served_at: datetime, request_id: str
    ) -> None:
        self.log_exposures([(user_id, article_ids, served_at, request_id)])

    def log_exposures(self, exposures: Iterable[tuple[str, Sequence[str], datetime, str]]) -> int:
        rows = [
            (request_id, user_id, orjson.dumps(list(article_ids)).decode(), to_us(served_at))
            for user_id, article_ids, served_at, request_id in exposures
        ]
        with _errors():
            conn = self._log()
            with _transaction(conn):
                conn.executemany(
                    "INSERT INTO exposures (request_id, user_id, article_ids, served_at_us) "
                    "VALUES (?, ?, ?, ?)",
                    rows,
                )
        return len(rows)

    def read_exposures(self, after: str | None = None, limit: int = 1000) -> list[Exposure]:
        with _errors():
            rows = (
                self._log()
                .execute(
                    "SELECT seq, request_id, user_id, article_ids, served_at_us FROM exposures "
                    "WHERE seq > ? ORDER BY seq LIMIT ?",
                    (int(after) if after is not None else 0, limit),
                )
                .fetchall()
            )
        return [
            Exposure(
                cursor=str(row[0]),
                request_id=row[1],
                user_id=row[2],
                article_ids=tuple(orjson.loads(row[3])),
                served_at=from_us(row[4]),
                position=row[0],
            )
            for row in rows
        ]

    def trim_exposures(self, up_to: str) -> int:
        with _errors():
            return self._log().execute("DELETE FROM exposures WHERE seq <= ?", (int(up_to),)).rowcount

    def record_view(self, user_id: str, article_id: str, viewed_at: datetime) -> ViewCount:
        viewed_us = to_us(viewed_at)
        with _errors():
            conn = self._log()
            with _transaction(conn):
                count, first_us = conn.execute(
                    "INSERT INTO view_counters "
                    "(user_id, article_id, view_count, first_viewed_at_us, last_viewed_at_us) "
                    "VALUES (?1, ?2, 1, ?3, ?3) ON CONFLICT (user_id, article_id) DO UPDATE SET "
                    "view_count = view_count + 1, "
                    "first_viewed_at_us = min(first_viewed_at_us, ?3), "
                    "last_viewed_at_us = max(last_viewed_at_us, ?3) "
                    "RETURNING view_count, first_viewed_at_us",
                    (user_id, article_id, viewed_us),
                ).fetchall()[0]
                (position,) = conn.execute(
                    "INSERT INTO counters (name, value) VALUES ('api_log_position', 1) "
                    "ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value"
                ).fetchall()[0]
        return ViewCount(
            user_id=user_id,
            article_id=article_id,
            view_count=count,
            first_viewed_at=from_us(first_us),
            last_viewed_at=from_us(viewed_us),
            log_position=position,
        )


def _article(row: Sequence[Any]) -> ArticleMeta:
    return ArticleMeta(
        article_id=row[0],
        title=row[1],
        category=row[2],
        subcategory=row[3],
        published_at=from_us(row[4]),
        url=row[5],
    )
