"""Redis adapter of the online store: the networked backend of the production profile.

All keys share one hash tag, `{<prefix>}:...`, so they live in one slot (Redis Cluster friendly)
and a test or a second deployment can use its own prefix.

Keys
----
- `{p}:b:<gen>` hash user -> record blob, `{p}:bw:<gen>` hash user -> watermark (µs): the batch
  lists of generation `<gen>`.
- `{p}:current` hash `gen`, `seq`: the generation readers follow and its write sequence number.
- `{p}:gens` hash gen -> JSON description; `{p}:genwm` hash gen -> generation watermark (µs);
  `{p}:gen_counter` allocates generation numbers; `{p}:seq` is the global write sequence.
- `{p}:live` hash user -> record blob, `{p}:livemeta` hash user -> `"<watermark µs>:<seq>"`:
  lists written by `put_recommendations`.
- `{p}:model` (JSON), `{p}:articles` hash id -> JSON, `{p}:articles_by_pub` sorted set by
  published time, `{p}:article_rev` counter (bumped with every article upsert or delete),
  `{p}:artvec` hash id -> model version + float32 vector, `{p}:cold_start`.
- `{p}:exposures` stream (capped at `max_exposures`, approximately), `{p}:views:<user>` hash of
  view counters, `{p}:api_log_position` counter.

Atomicity (see `base` for the rules)
------------------------------------
Everything that must be atomic is one Lua script (Redis runs a script without interleaving):
the read (resolve the live row against the current generation's row: newest watermark, then
higher sequence number), the watermark-checked live write, the generation flip (refused if a
newer generation is current) and each check-and-delete of dominated live rows. A batch is staged
in pipelined chunks under a fresh generation number that no reader looks at until the flip; old
generations are `UNLINK`ed (freed in the background) after it. The scripts compute the
generation keys from the prefix they are given, so on Redis Cluster they rely on the shared
hash tag keeping every key in one slot.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any

import numpy as np
import orjson
import redis
from redis import exceptions as redis_errors

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
from newsrec_assets.resources.online_store.redis_async import AsyncListReader

# KEYS: current, live, livemeta.  ARGV: user, batch key prefix, batch watermark key prefix.
_READ_LUA = """
local live_w, live_s
local meta = redis.call('HGET', KEYS[3], ARGV[1])
if meta then
  local w, s = string.match(meta, '^(-?%d+):(%d+)$')
  live_w, live_s = tonumber(w), tonumber(s)
end
local cur = redis.call('HMGET', KEYS[1], 'gen', 'seq')
if cur[1] then
  local bw = redis.call('HGET', ARGV[3] .. cur[1], ARGV[1])
  if bw then
    bw = tonumber(bw)
    local bs = tonumber(cur[2])
    if (not live_w) or bw > live_w or (bw == live_w and bs > live_s) then
      return redis.call('HGET', ARGV[2] .. cur[1], ARGV[1])
    end
  end
end
if live_w then
  return redis.call('HGET', KEYS[2], ARGV[1])
end
return false
"""

# KEYS: current, live, livemeta, seq.  ARGV: user, watermark µs, record blob, batch wm key prefix.
# Returns {accepted 0/1, watermark the reader saw before (string) or false}.
_WRITE_LIVE_LUA = """
local wm = tonumber(ARGV[2])
local seen, seen_s
local meta = redis.call('HGET', KEYS[3], ARGV[1])
if meta then
  seen_s = string.match(meta, '^(-?%d+):')
  seen = tonumber(seen_s)
end
local cur = redis.call('HMGET', KEYS[1], 'gen', 'seq')
if cur[1] then
  local bw_s = redis.call('HGET', ARGV[4] .. cur[1], ARGV[1])
  if bw_s then
    local bw = tonumber(bw_s)
    if (not seen) or bw > seen then seen, seen_s = bw, bw_s end
  end
end
if seen and wm < seen then
  return {0, seen_s}
end
local seq = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2] .. ':' .. seq)
return {1, seen_s or false}
"""

# KEYS: current, gens, seq, genwm, model.  ARGV: gen, generation watermark µs, gen JSON, model JSON.
# Returns {1, seq} or {0, reason}.
_FLIP_LUA = """
local cur = redis.call('HMGET', KEYS[1], 'gen', 'seq')
if cur[1] then
  if tonumber(cur[1]) > tonumber(ARGV[1]) then
    return {0, 'generation ' .. cur[1] .. ' is newer and already published'}
  end
  local cw = redis.call('HGET', KEYS[4], cur[1])
  if cw and tonumber(ARGV[2]) < tonumber(cw) then
    return {0, 'generation ' .. cur[1] .. ' reflects newer events'}
  end
end
local seq = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], 'gen', ARGV[1], 'seq', seq)
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
if ARGV[4] ~= '' then
  redis.call('SET', KEYS[5], ARGV[4])
end
return {1, seq}
"""

# KEYS: current, live, livemeta.  ARGV: batch wm key prefix, user...
# Deletes the given users' live rows that the current generation dominates. Returns {dropped, kept}.
_CLEAN_LIVE_LUA = """
local cur = redis.call('HMGET', KEYS[1], 'gen', 'seq')
if not cur[1] then return {0, 0} end
local bwkey = ARGV[1] .. cur[1]
local cseq = tonumber(cur[2])
local dropped, kept = 0, 0
for i = 2, #ARGV do
  local meta = redis.call('HGET', KEYS[3], ARGV[i])
  if meta then
    local bw = redis.call('HGET', bwkey, ARGV[i])
    if bw then
      local w, s = string.match(meta, '^(-?%d+):(%d+)$')
      w, s, bw = tonumber(w), tonumber(s), tonumber(bw)
      if bw > w or (bw == w and cseq > s) then
        redis.call('HDEL', KEYS[2], ARGV[i])
        redis.call('HDEL', KEYS[3], ARGV[i])
        dropped = dropped + 1
      else
        kept = kept + 1
      end
    end
  end
end
return {dropped, kept}
"""

# KEYS: views:<user>, api_log_position.  ARGV: article, viewed_at µs.
# Returns {view_count, first_viewed_at µs (string), log_position}.
_RECORD_VIEW_LUA = """
local count = redis.call('HINCRBY', KEYS[1], ARGV[1] .. '|c', 1)
local first = redis.call('HGET', KEYS[1], ARGV[1] .. '|f')
if (not first) or tonumber(ARGV[2]) < tonumber(first) then
  first = ARGV[2]
  redis.call('HSET', KEYS[1], ARGV[1] .. '|f', first)
end
local position = redis.call('INCR', KEYS[2])
return {count, first, position}
"""

# KEYS: exposures stream.  ARGV: JSON [[request_id, user_id, article_ids JSON, served_at µs], ...],
# approximate max length. One command per call, which costs its caller less than a pipeline of
# XADDs; calls are kept to `exposures_per_call` rows, since Redis runs a script alone.
_LOG_EXPOSURES_LUA = """
local rows = cjson.decode(ARGV[1])
for i = 1, #rows do
  local row = rows[i]
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*',
             'request_id', row[1], 'user_id', row[2], 'article_ids', row[3], 'served_at_us', row[4])
end
return #rows
"""

_VECTOR_HEADER = struct.Struct("<H")  # length of the model version that precedes the float32s


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except (redis_errors.ConnectionError, redis_errors.TimeoutError) as error:
        raise StoreUnavailable(f"redis: {error}") from error
    except redis_errors.RedisError as error:
        raise StoreError(f"redis: {error}") from error


class RedisOnlineStore(OnlineStore):
    """Online store in Redis (redis-py). See the module docstring for keys and atomicity.

    Args:
        url: `redis://host:port/db`; ignored when `client` is given.
        prefix: key namespace (becomes the hash tag `{prefix}`).
        capacity: items kept per user list.
        client: an existing `redis.Redis` (bytes responses, i.e. `decode_responses=False`).
        socket_timeout: seconds before a command fails with `StoreUnavailable`.
        max_exposures: approximate cap of the exposure stream.
    """

    # A script call holds Redis about 2.5 µs per exposure (SLOWLOG: 0.5 ms for 200 rows, 36 µs
    # for 16), and the API's reads wait behind it. With the API at 2,000 req/s, calls of 32 rows
    # put its p99 at 0.63-0.66 ms, of 8 rows at 0.46-0.65 ms, of 200 rows at 0.80-1.23 ms.
    exposures_per_call = 8

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "newsrec",
        capacity: int = DEFAULT_CAPACITY,
        client: redis.Redis | None = None,
        socket_timeout: float = 2.0,
        max_exposures: int = 1_000_000,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if not prefix or any(c in prefix for c in "{}"):
            raise ValueError("prefix must be non-empty and free of braces")
        self.prefix = prefix
        self.capacity = capacity
        self.max_exposures = max_exposures
        self.client = client or redis.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
        )
        self._p = f"{{{prefix}}}:"
        self._read = self.client.register_script(_READ_LUA)
        self._write_live = self.client.register_script(_WRITE_LIVE_LUA)
        self._flip = self.client.register_script(_FLIP_LUA)
        self._clean_live = self.client.register_script(_CLEAN_LIVE_LUA)
        self._record_view = self.client.register_script(_RECORD_VIEW_LUA)
        self._log_exposures = self.client.register_script(_LOG_EXPOSURES_LUA)
        # KEYS of the read, live-write and clean-up scripts: current, live, livemeta.
        self._live_keys = (self.key("current"), self.key("live"), self.key("livemeta"))
        self._read_args = (self.key("b:"), self.key("bw:"))
        self._readers = threading.local()
        self._readers_lock = threading.Lock()
        self._reader_connections: list[Any] = []

    def key(self, name: str) -> str:
        return self._p + name

    def close(self) -> None:
        with self._readers_lock:
            connections, self._reader_connections = self._reader_connections, []
        for connection in connections:
            connection.disconnect()
        self._readers = threading.local()
        self.client.close()

    def ping(self) -> None:
        with _errors():
            self.client.ping()

    def clear(self) -> int:
        """Delete every key of this prefix (tests and resets); returns the number deleted."""
        deleted = 0
        with _errors():
            for chunk in batched(self.client.scan_iter(match=self._p + "*", count=1000), 500):
                deleted += self.client.unlink(*chunk)
        return deleted

    # -- recommendations -----------------------------------------------------------------------

    def get_recommendations(self, user_id: str) -> UserRecommendations | None:
        with _errors():
            blob = self._read_list(user_id)
        return None if blob is None else decode_record(user_id, blob)

    def _read_list(self, user_id: str) -> bytes | None:
        """The read script, sent on this thread's own connection.

        The read path's one command per request: going through `Redis.execute_command` (pool
        checkout, retry wrapper, response callbacks) costs more client CPU than the round trip
        itself, so each thread keeps a connection of the pool for this command and speaks to it
        directly. A broken connection is dropped (the next call reconnects); a Redis that lost
        its scripts (restart, SCRIPT FLUSH) gets the script loaded again.
        """
        connection = getattr(self._readers, "connection", None)
        if connection is None:
            connection = self._readers.connection = self.client.connection_pool.get_connection()
            with self._readers_lock:
                self._reader_connections.append(connection)
        keys = self._live_keys
        command = connection.pack_command(
            "EVALSHA", self._read.sha, len(keys), *keys, user_id, *self._read_args
        )
        try:
            connection.send_packed_command(command, check_health=False)
            return connection.read_response()
        except redis_errors.NoScriptError:
            self._read.sha = self.client.script_load(_READ_LUA)
            return self._read(keys=list(keys), args=[user_id, *self._read_args])
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError):
            connection.disconnect()
            raise

    def async_reads(self) -> AsyncListReader | None:
        """Non-blocking reads for an asyncio server (see `redis_async`); None for a connection
        kind it does not speak (TLS, unix socket)."""
        pool = self.client.connection_pool
        if pool.connection_class is not redis.Connection:
            return None
        options = pool.connection_kwargs
        return AsyncListReader(
            host=options.get("host", "localhost"),
            port=int(options.get("port", 6379)),
            db=int(options.get("db", 0)),
            username=options.get("username"),
            password=options.get("password"),
            sha=self._read.sha,
            keys=self._live_keys,
            args=self._read_args,
            load_script=lambda: self.client.script_load(_READ_LUA),
            timeout_s=options.get("socket_timeout") or 2.0,
        )

    def put_recommendations(self, record: UserRecommendations) -> WriteResult:
        record = record.truncated(self.capacity)
        with _errors():
            accepted, seen = self._write_live(
                keys=[*self._live_keys, self.key("seq")],
                args=[record.user_id, to_us(record.watermark), encode_record(record), self.key("bw:")],
            )
        stored = None if seen is None else from_us(int(seen))
        if not accepted:
            return WriteResult(accepted=False, reason="stale_watermark", stored_watermark=stored)
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
            generation = int(self.client.incr(self.key("gen_counter")))
            self.client.hset(
                self.key("gens"),
                str(generation),
                orjson.dumps({"state": "staging", "started_at_us": to_us(now_utc())}),
            )
            try:
                result = self._stage_and_flip(generation, records, model_version, chunk_size)
            except BaseException:
                with suppress(redis_errors.RedisError):  # keep the original error
                    self._drop_generation(generation)
                raise
            if not result.published:
                self._drop_generation(generation)
                return result
            kept = self._drop_dominated_live()
            self._drop_generations_before(generation)
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
        generation: int,
        records: Iterable[UserRecommendations],
        model_version: str | None,
        chunk_size: int,
    ) -> PublishResult:
        batch_key, wm_key = self.key(f"b:{generation}"), self.key(f"bw:{generation}")
        newest_us: int | None = None
        for chunk in batched(records, chunk_size):
            blobs: dict[str, bytes] = {}
            watermarks: dict[str, int] = {}
            for record in chunk:
                watermark_us = to_us(record.watermark)
                newest_us = watermark_us if newest_us is None else max(newest_us, watermark_us)
                blobs[record.user_id] = encode_record(record.truncated(self.capacity))
                watermarks[record.user_id] = watermark_us
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(batch_key, mapping=blobs)
            pipe.hset(wm_key, mapping=watermarks)
            pipe.execute()
        users = int(self.client.hlen(batch_key))
        if users == 0 or newest_us is None:
            return PublishResult(generation, published=False, reason="empty batch")
        watermark = from_us(newest_us)
        now_us = to_us(now_utc())
        model_json = b""
        if model_version is not None:
            current_model = self.get_model_version()
            metadata = (
                current_model.metadata if current_model and current_model.version == model_version else {}
            )
            model_json = orjson.dumps(
                {"version": model_version, "metadata": metadata, "updated_at_us": now_us}
            )
        generation_json = orjson.dumps(
            {
                "state": "published",
                "watermark_us": newest_us,
                "model_version": model_version,
                "users": users,
                "published_at_us": now_us,
            }
        )
        flipped, detail = self._flip(
            keys=[
                self.key("current"),
                self.key("gens"),
                self.key("seq"),
                self.key("genwm"),
                self.key("model"),
            ],
            args=[generation, newest_us, generation_json, model_json],
        )
        if not flipped:
            reason = detail.decode() if isinstance(detail, bytes) else str(detail)
            return PublishResult(generation, published=False, reason=reason, watermark=watermark)
        return PublishResult(
            generation, published=True, reason="published", users_written=users, watermark=watermark
        )

    def _drop_dominated_live(self) -> int:
        """Delete live rows the current generation dominates; returns how many live rows win."""
        kept = 0
        users = (user for user, _ in self.client.hscan_iter(self.key("livemeta"), count=1000))
        for chunk in batched(users, 500):
            _, chunk_kept = self._clean_live(keys=list(self._live_keys), args=[self.key("bw:"), *chunk])
            kept += int(chunk_kept)
        return kept

    def _drop_generation(self, generation: int) -> None:
        self.client.unlink(self.key(f"b:{generation}"), self.key(f"bw:{generation}"))
        self.client.hdel(self.key("gens"), str(generation))

    def _drop_generations_before(self, generation: int) -> None:
        for raw in self.client.hkeys(self.key("gens")):
            old = int(raw)
            if old < generation:
                self._drop_generation(old)
                self.client.hdel(self.key("genwm"), str(old))

    def current_generation(self) -> GenerationInfo | None:
        with _errors():
            raw = self.client.hget(self.key("current"), "gen")
            if raw is None:
                return None
            described = self.client.hget(self.key("gens"), raw)
        info = orjson.loads(described) if described else {}
        return GenerationInfo(
            generation=int(raw),
            watermark=from_us(info["watermark_us"]) if info.get("watermark_us") is not None else None,
            model_version=info.get("model_version"),
            users=int(info.get("users", 0)),
            published_at=from_us(info["published_at_us"]) if info.get("published_at_us") else None,
        )

    # -- model version -------------------------------------------------------------------------

    def set_model_version(self, version: str, metadata: dict[str, Any] | None = None) -> None:
        if not version:
            raise ValueError("version must be set")
        if metadata is None:
            current = self.get_model_version()
            metadata = current.metadata if current and current.version == version else {}
        document = {"version": version, "metadata": metadata, "updated_at_us": to_us(now_utc())}
        with _errors():
            self.client.set(self.key("model"), orjson.dumps(document))

    def get_model_version(self) -> ModelVersion | None:
        with _errors():
            raw = self.client.get(self.key("model"))
        if raw is None:
            return None
        document = orjson.loads(raw)
        return ModelVersion(
            version=document["version"],
            metadata=document.get("metadata") or {},
            updated_at=from_us(document["updated_at_us"]),
        )

    # -- articles ------------------------------------------------------------------------------

    def upsert_articles(self, articles: Iterable[ArticleMeta]) -> int:
        written = 0
        with _errors():
            for chunk in batched(articles, 1000):
                pipe = self.client.pipeline(transaction=True)
                pipe.hset(self.key("articles"), mapping={a.article_id: _article_json(a) for a in chunk})
                pipe.zadd(self.key("articles_by_pub"), {a.article_id: to_us(a.published_at) for a in chunk})
                pipe.incr(self.key("article_rev"))
                pipe.execute()
                written += len(chunk)
        return written

    def delete_articles(self, article_ids: Iterable[str]) -> int:
        ids = list(article_ids)
        if not ids:
            return 0
        with _errors():
            pipe = self.client.pipeline(transaction=True)
            pipe.hdel(self.key("articles"), *ids)
            pipe.zrem(self.key("articles_by_pub"), *ids)
            pipe.hdel(self.key("artvec"), *ids)
            pipe.incr(self.key("article_rev"))
            pipe.execute()
        return len(ids)

    def get_articles(self, article_ids: Sequence[str]) -> dict[str, ArticleMeta]:
        if not article_ids:
            return {}
        ids = list(article_ids)
        with _errors():
            raws = self.client.hmget(self.key("articles"), ids)
        return {
            article_id: _article_from_json(article_id, raw)
            for article_id, raw in zip(ids, raws, strict=True)
            if raw is not None
        }

    def article_revision(self) -> int:
        with _errors():
            value = self.client.get(self.key("article_rev"))
        return 0 if value is None else int(value)

    def recent_articles(self, limit: int) -> list[ArticleMeta]:
        if limit < 1:
            return []
        with _errors():
            ids = [raw.decode() for raw in self.client.zrevrange(self.key("articles_by_pub"), 0, limit - 1)]
        found = self.get_articles(ids)
        return [found[article_id] for article_id in ids if article_id in found]

    def put_article_vectors(self, article_ids: Sequence[str], vectors: np.ndarray, model_version: str) -> int:
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != len(article_ids):
            raise ValueError(f"vectors must be [{len(article_ids)}, d], got {matrix.shape}")
        version = model_version.encode()
        header = _VECTOR_HEADER.pack(len(version)) + version
        mapping = {str(a): header + matrix[i].tobytes() for i, a in enumerate(article_ids)}
        with _errors():
            for chunk in batched(mapping.items(), 1000):
                self.client.hset(self.key("artvec"), mapping=dict(chunk))
        return len(mapping)

    def get_fresh_articles(self, published_after: datetime, model_version: str) -> FreshArticles:
        with _errors():
            pairs = self.client.zrangebyscore(
                self.key("articles_by_pub"), f"({to_us(published_after)}", "+inf", withscores=True
            )
            if not pairs:
                return FreshArticles.empty(model_version)
            ids = [raw.decode() for raw, _ in pairs]
            blobs = self.client.hmget(self.key("artvec"), ids)
        version = model_version.encode()
        keep_ids, keep_published, keep_vectors = [], [], []
        for article_id, (_, score), blob in zip(ids, pairs, blobs, strict=True):
            if blob is None:
                continue
            (length,) = _VECTOR_HEADER.unpack_from(blob, 0)
            start = _VECTOR_HEADER.size
            if blob[start : start + length] != version:
                continue
            keep_ids.append(article_id)
            keep_published.append(int(score))
            keep_vectors.append(blob[start + length :])
        if not keep_ids:
            return FreshArticles.empty(model_version)
        vectors = np.frombuffer(b"".join(keep_vectors), dtype=np.float32).reshape(len(keep_ids), -1)
        return FreshArticles(
            article_ids=np.asarray(keep_ids, dtype=str),
            published_at_us=np.asarray(keep_published, dtype=np.int64),
            vectors=vectors,
            model_version=model_version,
        )

    def prune_article_vectors(self, published_before: datetime) -> int:
        cutoff = to_us(published_before)
        with _errors():
            ids = self.client.hkeys(self.key("artvec"))
            if not ids:
                return 0
            pipe = self.client.pipeline(transaction=False)
            for article_id in ids:
                pipe.zscore(self.key("articles_by_pub"), article_id)
            stale = [
                article_id
                for article_id, score in zip(ids, pipe.execute(), strict=True)
                if score is None or score < cutoff
            ]
            if stale:
                self.client.hdel(self.key("artvec"), *stale)
        return len(stale)

    # -- cold start ----------------------------------------------------------------------------

    def put_cold_start(self, cold_start: ColdStartList) -> None:
        with _errors():
            self.client.set(self.key("cold_start"), encode_cold_start(cold_start))

    def get_cold_start(self) -> ColdStartList | None:
        with _errors():
            blob = self.client.get(self.key("cold_start"))
        return None if blob is None else decode_cold_start(blob)

    # -- logs ----------------------------------------------------------------------------------

    def log_exposure(
        self, user_id: str, article_ids: Sequence[str], served_at: datetime, request_id: str
    ) -> None:
        self.log_exposures([(user_id, article_ids, served_at, request_id)])

    def log_exposures(self, exposures: Iterable[tuple[str, Sequence[str], datetime, str]]) -> int:
        rows = [
            (request_id, user_id, orjson.dumps(list(article_ids)).decode(), str(to_us(served_at)))
            for user_id, article_ids, served_at, request_id in exposures
        ]
        if rows:
            with _errors():
                self._log_exposures(
                    keys=[self.key("exposures")], args=[orjson.dumps(rows), self.max_exposures]
                )
        return len(rows)

    def read_exposures(self, after: str | None = None, limit: int = 1000) -> list[Exposure]:
        with _errors():
            entries = self.client.xrange(
                self.key("exposures"), min="-" if after is None else f"({after}", max="+", count=limit
            )
        exposures = []
        for entry_id, fields in entries:
            exposures.append(
                Exposure(
                    cursor=entry_id.decode(),
                    request_id=fields[b"request_id"].decode(),
                    user_id=fields[b"user_id"].decode(),
                    article_ids=tuple(orjson.loads(fields[b"article_ids"])),
                    served_at=from_us(int(fields[b"served_at_us"])),
                    position=_stream_position(entry_id),
                )
            )
        return exposures

    def trim_exposures(self, up_to: str) -> int:
        millis, _, seq = up_to.partition("-")
        with _errors():  # XTRIM MINID drops entries with ids lower than the next id after up_to
            return int(
                self.client.xtrim(
                    self.key("exposures"), minid=f"{millis}-{int(seq or 0) + 1}", approximate=False
                )
            )

    def record_view(self, user_id: str, article_id: str, viewed_at: datetime) -> ViewCount:
        viewed_us = to_us(viewed_at)
        with _errors():
            count, first, position = self._record_view(
                keys=[self.key(f"views:{user_id}"), self.key("api_log_position")],
                args=[article_id, viewed_us],
            )
        return ViewCount(
            user_id=user_id,
            article_id=article_id,
            view_count=int(count),
            first_viewed_at=from_us(int(first)),
            last_viewed_at=from_us(viewed_us),
            log_position=int(position),
        )


def _stream_position(entry_id: bytes) -> int:
    """A stream entry id (`<ms>-<seq>`) as one ordered integer: ms * 1024 + seq. An exposure is
    one XADD, so more than 1024 in one millisecond would take a million a second."""
    millis, _, seq = entry_id.partition(b"-")
    if int(seq) >= 1024:
        raise StoreError(f"redis: exposure entry {entry_id!r} beyond 1024 in one millisecond")
    return int(millis) * 1024 + int(seq)


def _article_json(article: ArticleMeta) -> bytes:
    return orjson.dumps(
        {
            "title": article.title,
            "category": article.category,
            "subcategory": article.subcategory,
            "published_at_us": to_us(article.published_at),
            "url": article.url,
        }
    )


def _article_from_json(article_id: str, raw: bytes) -> ArticleMeta:
    document = orjson.loads(raw)
    return ArticleMeta(
        article_id=article_id,
        title=document["title"],
        category=document["category"],
        subcategory=document["subcategory"],
        published_at=from_us(document["published_at_us"]),
        url=document.get("url"),
    )
