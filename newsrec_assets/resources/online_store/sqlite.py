"""SQLite adapters of the online store: the embedded default, one file in WAL mode.

The list store and the article cache share one file; WAL lets readers (API workers, `read_only`)
and the writer (the Dagster runs) never block each other, and a statement reads one snapshot.
`batch_recs` holds every generation's lists, `current_generation` the pointer readers
follow, `generations` their states, `live_recs` the speed lists; a read is one statement over the
live row and the current generation's (never a mix of generations). The publish lease is an
`flock` on `<file>.publish-lock`, which the kernel drops with a dead process.

Space: new files use incremental auto-vacuum; after a publish, free pages beyond the live data's
size (room for the next staging) go back to the file system, so a file that crashed publishes
bloated shrinks (an older file is converted by one `VACUUM` then).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from newsrec_assets.resources.online_store import base

# The lists file: the lists, then the article cache (any writer creates both).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (key, value) VALUES ('write_seq', 0), ('schema_version', 1);
CREATE TABLE IF NOT EXISTS current_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1), generation INTEGER NOT NULL, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS generations (
    generation INTEGER PRIMARY KEY, state TEXT NOT NULL, watermark_us INTEGER, model_version TEXT,
    users INTEGER NOT NULL DEFAULT 0, seq INTEGER, started_at_us INTEGER NOT NULL, published_at_us INTEGER);
CREATE TABLE IF NOT EXISTS batch_recs (
    generation INTEGER NOT NULL, user_id TEXT NOT NULL, watermark_us INTEGER NOT NULL, record BLOB NOT NULL,
    PRIMARY KEY (generation, user_id));
CREATE TABLE IF NOT EXISTS shard_batches (
    batch_key TEXT PRIMARY KEY, generation INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS staged_shards (
    generation INTEGER NOT NULL, shard INTEGER NOT NULL, users INTEGER NOT NULL, watermark_us INTEGER,
    model_version TEXT NOT NULL, PRIMARY KEY (generation, shard)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS live_recs (
    user_id TEXT PRIMARY KEY, watermark_us INTEGER NOT NULL, seq INTEGER NOT NULL, record BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS model_version (
    id INTEGER PRIMARY KEY CHECK (id = 1), version TEXT NOT NULL, metadata TEXT NOT NULL,
    updated_at_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS cold_start (id INTEGER PRIMARY KEY CHECK (id = 1), record BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS recent_clicks (
    user_id TEXT NOT NULL, article_id TEXT NOT NULL, viewed_at_us INTEGER NOT NULL,
    PRIMARY KEY (user_id, article_id, viewed_at_us)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS articles (
    article_id TEXT PRIMARY KEY, title TEXT NOT NULL, category TEXT NOT NULL, subcategory TEXT NOT NULL,
    published_at_us INTEGER NOT NULL, url TEXT) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS articles_by_published ON articles (published_at_us);
CREATE TABLE IF NOT EXISTS article_vectors (
    article_id TEXT PRIMARY KEY, model_version TEXT NOT NULL, vector BLOB NOT NULL);
"""

# The candidates for what a reader sees (one statement, one snapshot): (record, watermark_us, seq).
_CANDIDATES_SQL = """
SELECT record, watermark_us, seq FROM live_recs WHERE user_id = ?1
UNION ALL
SELECT b.record, b.watermark_us, c.seq FROM current_generation AS c
JOIN batch_recs AS b ON b.generation = c.generation AND b.user_id = ?1
"""
_NEXT_SEQ_SQL = "UPDATE meta SET value = value + 1 WHERE key = 'write_seq' RETURNING value"
# Live rows the current generation dominates (newer watermark, or equal and a later write).
_DROP_DOMINATED_SQL = """
DELETE FROM live_recs WHERE rowid IN (
    SELECT l.rowid FROM live_recs AS l JOIN current_generation AS c
    JOIN batch_recs AS b ON b.generation = c.generation AND b.user_id = l.user_id
    WHERE b.watermark_us > l.watermark_us OR (b.watermark_us = l.watermark_us AND c.seq > l.seq))
"""
_DROP_ROWS_SQL = (
    "DELETE FROM batch_recs WHERE rowid IN (SELECT rowid FROM batch_recs WHERE generation = ? LIMIT ?)"
)
# Metadata stays '{}': the column predates the port's split and existing files keep it.
_SET_MODEL_SQL = "INSERT OR REPLACE INTO model_version VALUES (1, ?, '{}', ?)"
_WRITER_PRAGMAS = (
    "PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; "
    f"PRAGMA journal_size_limit = {64 << 20};"
)
_SETUP_LOCK = threading.Lock()  # switching a new file to WAL fails at once if two try together
_BUMP_REVISION_SQL = (
    "INSERT INTO meta (key, value) VALUES ('article_revision', 1) "
    "ON CONFLICT (key) DO UPDATE SET value = value + 1"
)
_ARTICLE_COLUMNS = "article_id, title, category, subcategory, published_at_us, url"
_CLEANUP_CHUNK = 5000
_PAGE_BYTES = 16384  # a ~2 KB list record: seven share a 16 KB page, each takes its own 4 KB page
_MMAP_BYTES = 2**31
_RELEASE_MIN_PAGES = 64  # 1 MB: smaller surpluses of free pages are not worth moving pages for
_RELEASE_CHUNK = 2048  # pages given back per transaction, so speed writes interleave


def _store_error(error: sqlite3.Error) -> base.StoreError:
    if isinstance(error, sqlite3.OperationalError):  # locked past the timeout, cannot open, I/O
        return base.StoreUnavailable(f"sqlite: {error}")
    return base.StoreError(f"sqlite: {error}")


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as error:
        raise _store_error(error) from error


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _select_in(conn: sqlite3.Connection, sql: str, ids: Sequence[str], *params: Any) -> Iterator[Any]:
    """The rows of `sql` for `ids`, whose placeholders fill `IN ({ids})`, 500 (SQLite's limit) at a time."""
    for chunk in base.batched(ids, 500):
        yield from conn.execute(sql.format(ids=",".join("?" * len(chunk))), [*chunk, *params])


class _Connections(threading.local):
    """This thread's connection to one file (a forked child opens its own), opened lazily."""

    def __init__(self, path: Path, read_only: bool, busy_timeout_ms: int, schema: str) -> None:
        self.path, self.read_only, self.timeout_ms, self.schema = path, read_only, busy_timeout_ms, schema
        self.conn, self.pid = None, None

    def get(self) -> sqlite3.Connection:
        if self.conn is None or self.pid != os.getpid():
            self.conn, self.pid = self._open(), os.getpid()
        return self.conn

    def _open(self) -> sqlite3.Connection:
        with _errors():
            if self.read_only:
                if not self.path.exists():
                    raise base.StoreUnavailable(f"sqlite: online store file {self.path} does not exist")
                uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
                conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
                # Map the file: a lookup reads its pages in place, without a read() and copy each.
                conn.executescript(f"PRAGMA query_only = 1; PRAGMA mmap_size = {_MMAP_BYTES};")
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                with _SETUP_LOCK:  # page size and auto-vacuum take effect on a new file only
                    conn.executescript(f"PRAGMA page_size = {_PAGE_BYTES}; {_WRITER_PRAGMAS} {self.schema}")
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout_ms)}")
            return conn

    def writer(self) -> sqlite3.Connection:
        if self.read_only:
            raise base.ReadOnlyStore(f"{self.path} was opened read-only")
        return self.get()

    def close(self) -> None:
        """Close this thread's connection (those of other threads close with their threads)."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class SQLiteListStore(base.ListStore):
    """Recommendation lists in the SQLite file `path` (created unless `read_only`, as API workers
    open it)."""

    _errors = staticmethod(_errors)

    def __init__(
        self, path: str | os.PathLike[str], *, read_only: bool = False, busy_timeout_ms: int = 5000
    ) -> None:
        self.path, self.read_only = Path(path), read_only
        self._lists = _Connections(self.path, read_only, busy_timeout_ms, _SCHEMA)
        self._lease_path = self.path.with_name(f"{self.path.name}.publish-lock")
        if not read_only:
            self.clean_abandoned()  # also creates the file, so that readers can open it read-only

    def close(self) -> None:
        self._lists.close()

    def ping(self) -> None:
        with _errors():
            self._lists.get().execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()

    def _seen(self, conn: sqlite3.Connection, user_id: str) -> tuple[Any, ...] | None:
        """The (record, watermark_us, seq) row a reader sees: newest watermark, then latest write."""
        rows = conn.execute(_CANDIDATES_SQL, (user_id,)).fetchall()
        return max(rows, key=lambda row: (row[1], row[2])) if rows else None

    def get_recommendations(self, user_id: str) -> base.UserRecommendations | None:
        with _errors():
            row = self._seen(self._lists.get(), user_id)
        return None if row is None else base.decode_record(user_id, row[0])

    def _write_live(self, user_id: str, watermark_us: int, record: bytes) -> tuple[bool, int | None]:
        with _transaction(self._lists.writer()) as conn:
            seen = self._seen(conn, user_id)
            seen_us = None if seen is None else seen[1]
            if seen_us is not None and watermark_us < seen_us:
                return False, seen_us
            (seq,) = conn.execute(_NEXT_SEQ_SQL).fetchone()
            conn.execute(
                "INSERT OR REPLACE INTO live_recs VALUES (?, ?, ?, ?)", (user_id, watermark_us, seq, record)
            )
        return True, seen_us

    # -- the publish steps (see base.ListStore.publish_batch) ------------------------------------

    @contextmanager
    def _lease(self, wait: bool) -> Iterator[bool | None]:
        """An flock on `<file>.publish-lock`: the kernel drops it with its process."""
        if self.read_only:
            yield None
            return
        self._lease_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lease_path, "a+b") as lease:
            try:
                fcntl.flock(lease, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield None
                return
            yield True  # closing the file releases the lock

    def _generation_states(self) -> dict[int, str]:
        return dict(self._lists.writer().execute("SELECT generation, state FROM generations"))

    def _new_generation(self, batch_key: str | None) -> int:
        with _transaction(self._lists.writer()) as conn:
            sql = "SELECT generation FROM shard_batches WHERE batch_key = ?"
            if batch_key is not None and (found := conn.execute(sql, (batch_key,)).fetchone()):
                return found[0]
            (generation,) = conn.execute(
                "SELECT coalesce(max(generation), 0) + 1 FROM generations"
            ).fetchone()
            conn.execute(
                "INSERT INTO generations (generation, state, started_at_us) VALUES (?, ?, ?)",
                (generation, "staging" if batch_key is None else "sharded", base.to_us(base.now_utc())),
            )
            if batch_key is not None:
                conn.execute("INSERT INTO shard_batches VALUES (?, ?)", (batch_key, generation))
        return generation

    def _mark_shard(self, generation: int, shard: int, staged: tuple[int, int | None, str]) -> None:
        with _transaction(self._lists.writer()) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO staged_shards VALUES (?, ?, ?, ?, ?)", (generation, shard, *staged)
            )

    def _staged_shards(self) -> dict[int, dict[int, tuple[int, int | None, str]]]:
        found: dict[int, dict[int, tuple[int, int | None, str]]] = {}
        sql = "SELECT s.* FROM staged_shards AS s JOIN generations USING (generation) WHERE state = 'sharded'"
        for generation, shard, *staged in self._lists.writer().execute(sql):
            found.setdefault(generation, {})[shard] = tuple(staged)
        return found

    def _stage(self, generation: int, rows: list[tuple[str, int, bytes]], lease: Any) -> None:
        with _transaction(self._lists.writer()) as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO batch_recs VALUES (?, ?, ?, ?)", [(generation, *row) for row in rows]
            )

    def _flip(
        self, generation: int, newest_us: int, model_version: str | None, lease: Any
    ) -> tuple[int, str | None]:
        with _transaction(self._lists.writer()) as conn:
            (users,) = conn.execute(
                "SELECT count(*) FROM batch_recs WHERE generation = ?", (generation,)
            ).fetchone()
            sql = (
                "SELECT generation, watermark_us FROM current_generation JOIN generations USING (generation)"
            )
            current, current_us = conn.execute(sql).fetchone() or (None, None)
            why = None
            if current is not None and current > generation:
                why = "is newer and already published"
            elif current_us is not None and newest_us < current_us:
                why = "reflects newer events"
            if why:
                return 0, f"generation {current} {why}"
            (seq,) = conn.execute(_NEXT_SEQ_SQL).fetchone()
            now_us = base.to_us(base.now_utc())
            conn.execute("INSERT OR REPLACE INTO current_generation VALUES (1, ?, ?)", (generation, seq))
            conn.execute(
                "UPDATE generations SET state = 'published', watermark_us = ?, model_version = ?, users = ?, "
                "seq = ?, published_at_us = ? WHERE generation = ?",
                (newest_us, model_version, users, seq, now_us, generation),
            )
            if model_version is not None:
                conn.execute(_SET_MODEL_SQL, (model_version, now_us))
            # A shard retried later stages a batch of its own, never into the visible generation.
            conn.execute("DELETE FROM shard_batches WHERE generation = ?", (generation,))
        return users, None

    def _drop_generations(self, generations: list[int]) -> None:
        conn = self._lists.writer()
        for generation in generations:
            while True:  # in chunks, so that speed writes interleave
                with _transaction(conn):
                    if conn.execute(_DROP_ROWS_SQL, (generation, _CLEANUP_CHUNK)).rowcount < _CLEANUP_CHUNK:
                        break
            with _transaction(conn):
                for table in ("generations", "shard_batches", "staged_shards"):
                    conn.execute(f"DELETE FROM {table} WHERE generation = ?", (generation,))
        if generations:
            self._release_free_pages(conn)

    def _drop_dominated(self, generation: int) -> int:
        with _transaction(self._lists.writer()) as conn:
            conn.execute(_DROP_DOMINATED_SQL)
            return conn.execute(
                "SELECT count(*) FROM live_recs JOIN batch_recs USING (user_id) WHERE generation = ?",
                (generation,),
            ).fetchone()[0]

    @staticmethod
    def _release_free_pages(conn: sqlite3.Connection) -> None:
        """Give free pages beyond the live data's size back to the file system (see the module
        docstring): the next publish stages into the pages kept."""
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        excess = free - (conn.execute("PRAGMA page_count").fetchone()[0] - free)
        if excess < _RELEASE_MIN_PAGES:
            return
        if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:  # made before incremental vacuum
            conn.executescript("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")  # compacts it whole, once
            excess = 0
        while excess > 0:
            # executescript steps the pragma to its end; execute() would free one page
            conn.executescript(f"PRAGMA incremental_vacuum({min(excess, _RELEASE_CHUNK)});")
            excess -= _RELEASE_CHUNK
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # the file shrinks at a checkpoint

    def current_generation(self) -> base.GenerationInfo | None:
        sql = "SELECT generation, watermark_us, model_version, users, published_at_us FROM generations"
        with _errors():
            row = self._lists.get().execute(f"{sql} JOIN current_generation USING (generation)").fetchone()
        if row is None:
            return None
        generation, watermark_us, model_version, users, published_at_us = row
        return base.GenerationInfo(
            generation,
            base.from_us_or_none(watermark_us),
            model_version,
            users,
            base.from_us_or_none(published_at_us),
        )

    # -- model version, cold start, recent clicks ----------------------------------------------

    def set_model_version(self, version: str) -> None:
        if not version:
            raise ValueError("version must be set")
        with _errors(), _transaction(self._lists.writer()) as conn:
            conn.execute(_SET_MODEL_SQL, (version, base.to_us(base.now_utc())))

    def get_model_version(self) -> str | None:
        with _errors():
            row = self._lists.get().execute("SELECT version FROM model_version").fetchone()
        return None if row is None else row[0]

    def put_cold_start(self, cold_start: base.ColdStartList) -> None:
        with _errors(), _transaction(self._lists.writer()) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO cold_start VALUES (1, ?)", (base.encode_cold_start(cold_start),)
            )

    def get_cold_start(self) -> base.ColdStartList | None:
        with _errors():
            row = self._lists.get().execute("SELECT record FROM cold_start").fetchone()
        return None if row is None else base.decode_cold_start(row[0])

    def add_recent_clicks(self, clicks: Iterable[tuple[str, str, int]]) -> None:
        with _errors(), _transaction(self._lists.writer()) as conn:
            conn.executemany("INSERT OR IGNORE INTO recent_clicks VALUES (?, ?, ?)", list(clicks))

    def recent_clicks(self, user_ids: Sequence[str], after_us: int) -> dict[str, list[tuple[str, int]]]:
        found: dict[str, list[tuple[str, int]]] = {user_id: [] for user_id in user_ids}
        sql = "SELECT * FROM recent_clicks WHERE user_id IN ({ids}) AND viewed_at_us > ? ORDER BY 3 DESC"
        with _errors():
            for user_id, article_id, viewed_at_us in _select_in(self._lists.get(), sql, user_ids, after_us):
                found[user_id].append((article_id, viewed_at_us))
        return found

    def forget_recent_clicks(self, before_us: int) -> int:
        with _errors(), _transaction(self._lists.writer()) as conn:
            return conn.execute("DELETE FROM recent_clicks WHERE viewed_at_us <= ?", (before_us,)).rowcount


class SQLiteArticleCache(base.ArticleCache):
    """Article metadata and vectors in a SQLite file (by default the lists file)."""

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False, busy_timeout_ms: int = 5000):
        self.path = Path(path)
        self._db = _Connections(self.path, read_only, busy_timeout_ms, _SCHEMA)
        if not read_only:
            self._db.get()

    def close(self) -> None:
        self._db.close()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with _errors():
            return self._db.get().execute(sql, params).fetchall()

    def upsert_articles(self, articles: Iterable[base.ArticleMeta]) -> int:
        rows = [
            (a.article_id, a.title, a.category, a.subcategory, base.to_us(a.published_at), a.url)
            for a in articles
        ]
        with _errors(), _transaction(self._db.writer()) as conn:
            conn.executemany(
                f"INSERT OR REPLACE INTO articles ({_ARTICLE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", rows
            )
            conn.execute(_BUMP_REVISION_SQL)
        return len(rows)

    def delete_articles(self, article_ids: Iterable[str]) -> int:
        ids = [(article_id,) for article_id in article_ids]
        with _errors(), _transaction(self._db.writer()) as conn:
            conn.executemany("DELETE FROM articles WHERE article_id = ?", ids)
            conn.executemany("DELETE FROM article_vectors WHERE article_id = ?", ids)
            conn.execute(_BUMP_REVISION_SQL)
        return len(ids)

    def get_articles(self, article_ids: Sequence[str]) -> dict[str, base.ArticleMeta]:
        sql = f"SELECT {_ARTICLE_COLUMNS} FROM articles WHERE article_id IN ({{ids}})"
        with _errors():
            return {row[0]: _article(row) for row in _select_in(self._db.get(), sql, article_ids)}

    def recent_articles(self, limit: int) -> list[base.ArticleMeta]:
        sql = f"SELECT {_ARTICLE_COLUMNS} FROM articles ORDER BY published_at_us DESC, article_id LIMIT ?"
        return [_article(row) for row in self._query(sql, (limit,))]

    def article_revision(self) -> int:
        rows = self._query("SELECT value FROM meta WHERE key = 'article_revision'")
        return int(rows[0][0]) if rows else 0

    def put_article_vectors(self, article_ids: Sequence[str], vectors: np.ndarray, model_version: str) -> int:
        rows = [
            (article_id, model_version, blob) for article_id, blob in base.vector_rows(article_ids, vectors)
        ]
        with _errors(), _transaction(self._db.writer()) as conn:
            conn.executemany("INSERT OR REPLACE INTO article_vectors VALUES (?, ?, ?)", rows)
        return len(rows)

    def get_fresh_articles(self, published_after: datetime, model_version: str) -> base.FreshArticles:
        rows = self._query(
            "SELECT a.article_id, a.published_at_us, v.vector FROM articles AS a JOIN article_vectors AS v "
            "USING (article_id) WHERE a.published_at_us > ? AND v.model_version = ? "
            "ORDER BY a.published_at_us, a.article_id",
            (base.to_us(published_after), model_version),
        )
        return base.FreshArticles.of(model_version, rows)


def _article(row: Sequence[Any]) -> base.ArticleMeta:
    return base.ArticleMeta(*row[:4], base.from_us(row[4]), row[5])
