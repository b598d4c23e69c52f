"""Redis adapters of the online store (redis-py): the networked backend of the production profile.

The Dagster runs and the API's background work use the blocking client; `AsyncRedisReads` is the
API's request path on `redis.asyncio`. All keys share the hash tag `{<prefix>}:` (one Cluster slot).
Keys: `b:<gen>` / `bw:<gen>` (user -> record / watermark µs) per generation; `current` (gen, seq)
the pointer; `gens`, `genwm` the generations; `gen_counter`, `seq`; `live` / `livemeta`
(`"<watermark>:<seq>"`) the speed lists; `publish_lease`; `model`; `cold_start`; `clicks:<user>`, `clicks`
(recent clicks by time); `articles`, `articles_by_pub`, `article_rev`, `artvec`.

The read, the watermark-checked live write, the flip (refused if a newer generation is current or
the publish lost its lease) and the clean-up of dominated live rows are Lua scripts (atomic). The
lease is a key with a TTL renewed by every staged chunk: a dead publisher's lapses.
"""

from __future__ import annotations

import struct
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import datetime
from typing import Any

import numpy as np
import orjson
import redis
import redis.asyncio
from redis import exceptions as redis_errors

from newsrec_assets.resources.online_store import base

# The row a reader sees (KEYS[1] current, KEYS[3] livemeta): the current generation's if its
# watermark is newer than the live row's, or equal and flipped after the live write (sequence), else
# the live row. Returns 'batch', 'live' or false; the winner's watermark as stored; the current
# generation; whether the other row exists.
_SEEN_LUA = """
local function seen(user, bw_prefix)
  local cur = redis.call('HMGET', KEYS[1], 'gen', 'seq')
  local lw, ls = false, false
  local meta = redis.call('HGET', KEYS[3], user)
  if meta then lw, ls = string.match(meta, '^(-?%d+):(%d+)$') end
  local bw = cur[1] and redis.call('HGET', bw_prefix .. cur[1], user)
  if bw and ((not lw) or tonumber(bw) > tonumber(lw)
             or (tonumber(bw) == tonumber(lw) and tonumber(cur[2]) > tonumber(ls))) then
    return 'batch', bw, cur[1], lw
  end
  if lw then return 'live', lw, cur[1], bw end
  return false
end
"""

# KEYS: current, live, livemeta.  ARGV: user, batch key prefix, batch watermark key prefix.
_READ_LUA = (
    _SEEN_LUA
    + """
local who, _, gen = seen(ARGV[1], ARGV[3])
if who == 'batch' then return redis.call('HGET', ARGV[2] .. gen, ARGV[1]) end
if who == 'live' then return redis.call('HGET', KEYS[2], ARGV[1]) end
return false
"""
)

# KEYS: current, live, livemeta, seq.  ARGV: user, watermark µs, record, batch wm key prefix.
# Returns {accepted 0/1, the watermark the reader saw before or false}.
_WRITE_LIVE_LUA = (
    _SEEN_LUA
    + """
local _, seen_w = seen(ARGV[1], ARGV[4])
if seen_w and tonumber(ARGV[2]) < tonumber(seen_w) then return {0, seen_w} end
local seq = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2] .. ':' .. seq)
return {1, seen_w or false}
"""
)

# KEYS: current, gens, seq, genwm, model, publish_lease.
# ARGV: gen, generation watermark µs, gen JSON, model JSON or '', lease token. Returns {1, seq} or {0, why}.
_FLIP_LUA = """
if redis.call('GET', KEYS[6]) ~= ARGV[5] then return {0, 'the publish lost its lease'} end
local cur = redis.call('HGET', KEYS[1], 'gen')
if cur then
  local why = 'generation ' .. cur
  if tonumber(cur) > tonumber(ARGV[1]) then return {0, why .. ' is newer and already published'} end
  local cw = redis.call('HGET', KEYS[4], cur)
  if cw and tonumber(ARGV[2]) < tonumber(cw) then return {0, why .. ' reflects newer events'} end
end
local seq = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], 'gen', ARGV[1], 'seq', seq)
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
if ARGV[4] ~= '' then redis.call('SET', KEYS[5], ARGV[4]) end
return {1, seq}
"""

# KEYS: current, live, livemeta.  ARGV: batch wm key prefix, user...
# Deletes those users' live rows that the current generation dominates; returns how many win.
_CLEAN_LIVE_LUA = (
    _SEEN_LUA
    + """
local kept = 0
for i = 2, #ARGV do
  local who, _, _, other = seen(ARGV[i], ARGV[1])
  if who == 'batch' and other then
    redis.call('HDEL', KEYS[2], ARGV[i])
    redis.call('HDEL', KEYS[3], ARGV[i])
  elseif who == 'live' and other then
    kept = kept + 1
  end
end
return kept
"""
)

_RELEASE_LUA = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_VECTOR_HEADER = struct.Struct("<H")  # length of the model version that precedes the float32s


def _redis_error(error: redis_errors.RedisError) -> base.StoreError:
    if isinstance(error, redis_errors.ConnectionError | redis_errors.TimeoutError):
        return base.StoreUnavailable(f"redis: {error}")
    return base.StoreError(f"redis: {error}")


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except redis_errors.RedisError as error:
        raise _redis_error(error) from error


class _Keys:
    def __init__(self, prefix: str) -> None:
        if not prefix or any(c in prefix for c in "{}"):
            raise ValueError("prefix must be non-empty and free of braces")
        self.prefix, self._p = prefix, f"{{{prefix}}}:"
        self.live = (self.key("current"), self.key("live"), self.key("livemeta"))
        self.batch = (self.key("b:"), self.key("bw:"))

    def key(self, name: str) -> str:
        return self._p + name


def _client(url: str, timeout: float, module: Any = redis) -> Any:
    return module.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


class RedisListStore(_Keys, base.ListStore):
    """Recommendation lists in Redis at `url` under `prefix`; a command taking longer than
    `socket_timeout` is `StoreUnavailable`; a publish that stops renewing its lease keeps it
    `lease_seconds`."""

    _errors = staticmethod(_errors)

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "newsrec",
        socket_timeout: float = 2.0,
        lease_seconds: float = 60.0,
    ) -> None:
        super().__init__(prefix)
        self.lease_ms = int(lease_seconds * 1000)
        self.client = _client(url, socket_timeout)
        self._read, self._write_script, self._flip_script, self._clean_live, self._release = (
            self.client.register_script(script)
            for script in (_READ_LUA, _WRITE_LIVE_LUA, _FLIP_LUA, _CLEAN_LIVE_LUA, _RELEASE_LUA)
        )

    def close(self) -> None:
        self.client.close()

    def ping(self) -> None:
        with _errors():
            self.client.ping()

    def clear(self) -> int:
        """Delete every key of this prefix (tests and resets); returns the number deleted."""
        with _errors():
            return sum(
                self.client.unlink(*c) for c in base.batched(self.client.scan_iter(match=self._p + "*"), 500)
            )

    # -- lists ---------------------------------------------------------------------------------

    def get_recommendations(self, user_id: str) -> base.UserRecommendations | None:
        with _errors():
            blob = self._read(keys=self.live, args=[user_id, *self.batch])
        return None if blob is None else base.decode_record(user_id, blob)

    def _write_live(self, user_id: str, watermark_us: int, record: bytes) -> tuple[bool, int | None]:
        keys = [*self.live, self.key("seq")]
        accepted, seen = self._write_script(keys=keys, args=[user_id, watermark_us, record, self.batch[1]])
        return bool(accepted), None if seen is None else int(seen)

    # -- the publish steps (see base.ListStore.publish_batch) ------------------------------------

    @contextmanager
    def _lock(self, name: str, ttl_ms: int, wait_s: float | None) -> Iterator[str | None]:
        """Hold the lock key `name` (our token, with a TTL); None when not waiting and it is taken."""
        token, deadline = uuid.uuid4().hex, time.monotonic() + (wait_s or 0)
        while not self.client.set(self.key(name), token, nx=True, px=ttl_ms):
            if wait_s is None:
                yield None
                return
            if time.monotonic() > deadline:
                raise base.StoreUnavailable(f"redis: {name} stayed taken for {wait_s} s")
            time.sleep(0.002)
        try:
            yield token
        finally:
            with suppress(redis_errors.RedisError):  # unreleased, it expires
                self._release(keys=[self.key(name)], args=[token])

    def _lease(self, wait: bool) -> AbstractContextManager[str | None]:
        """The publish lease; every staged chunk renews its TTL."""
        return self._lock("publish_lease", self.lease_ms, self.lease_ms / 1000 + 5 if wait else None)

    def _generation_states(self) -> dict[int, str]:
        described = self.client.hgetall(self.key("gens")).items()
        return {int(g): orjson.loads(info)["state"] for g, info in described}

    def _new_generation(self, batch_key: str | None) -> int:
        if batch_key is not None and (found := self.client.hget(self.key("shard_batches"), batch_key)):
            return int(found)
        generation = int(self.client.incr(self.key("gen_counter")))
        if batch_key is not None and not self.client.hsetnx(self.key("shard_batches"), batch_key, generation):
            return int(self.client.hget(self.key("shard_batches"), batch_key))  # another shard was first
        state = {"state": "staging"} if batch_key is None else {"state": "sharded", "batch_key": batch_key}
        self.client.hset(self.key("gens"), str(generation), orjson.dumps(state))
        return generation

    def _stage(self, generation: int, rows: list[tuple[str, int, bytes]], lease: Any) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.key(f"b:{generation}"), mapping={user: record for user, _, record in rows})
        pipe.hset(self.key(f"bw:{generation}"), mapping={user: watermark for user, watermark, _ in rows})
        if lease is not None:
            pipe.pexpire(self.key("publish_lease"), self.lease_ms)
        pipe.execute()

    def _mark_shard(self, generation: int, shard: int, staged: tuple[int, int | None, str]) -> None:
        self.client.hset(self.key(f"shards:{generation}"), str(shard), orjson.dumps(staged))

    def _staged_shards(self) -> dict[int, dict[int, tuple[int, int | None, str]]]:
        return {
            generation: {
                int(shard): tuple(orjson.loads(staged))
                for shard, staged in self.client.hgetall(self.key(f"shards:{generation}")).items()
            }
            for generation, state in self._generation_states().items()
            if state == "sharded"
        }

    def _flip(
        self, generation: int, newest_us: int, model_version: str | None, lease: Any
    ) -> tuple[int, str | None]:
        users, now_us = int(self.client.hlen(self.key(f"b:{generation}"))), base.to_us(base.now_utc())
        model = b"" if model_version is None else _model_json(model_version)
        prior = orjson.loads(self.client.hget(self.key("gens"), str(generation)) or b"{}")
        described = {"state": "published", "watermark_us": newest_us, "model_version": model_version}
        flipped, detail = self._flip_script(
            keys=[self.key(k) for k in ("current", "gens", "seq", "genwm", "model", "publish_lease")],
            args=[
                generation,
                newest_us,
                orjson.dumps(described | {"users": users, "published_at_us": now_us}),
                model,
                lease,
            ],
        )
        if flipped and "batch_key" in prior:  # a shard retried later stages apart, never into it
            self.client.hdel(self.key("shard_batches"), prior["batch_key"])
        return (users, None) if flipped else (0, detail.decode())

    def _drop_generations(self, generations: list[int]) -> None:
        for generation in generations:
            info = orjson.loads(self.client.hget(self.key("gens"), str(generation)) or b"{}")
            if "batch_key" in info:
                self.client.hdel(self.key("shard_batches"), info["batch_key"])
            self.client.unlink(*(self.key(f"{k}:{generation}") for k in ("b", "bw", "shards")))
            self.client.hdel(self.key("gens"), str(generation))
            self.client.hdel(self.key("genwm"), str(generation))

    def _drop_dominated(self, generation: int) -> int:
        users = (user for user, _ in self.client.hscan_iter(self.key("livemeta"), count=1000))
        chunks = base.batched(users, 500)
        return sum(int(self._clean_live(keys=self.live, args=[self.batch[1], *chunk])) for chunk in chunks)

    def current_generation(self) -> base.GenerationInfo | None:
        with _errors():
            raw = self.client.hget(self.key("current"), "gen")
            info = orjson.loads(self.client.hget(self.key("gens"), raw) or b"{}") if raw else None
        if info is None:
            return None
        watermark, published = (
            base.from_us_or_none(info.get(k)) for k in ("watermark_us", "published_at_us")
        )
        return base.GenerationInfo(
            int(raw), watermark, info.get("model_version"), int(info.get("users", 0)), published
        )

    # -- model version, cold start ---------------------------------------------------------------

    def set_model_version(self, version: str) -> None:
        if not version:
            raise ValueError("version must be set")
        with _errors():
            self.client.set(self.key("model"), _model_json(version))

    def get_model_version(self) -> str | None:
        with _errors():
            raw = self.client.get(self.key("model"))
        return None if raw is None else orjson.loads(raw)["version"]

    def put_cold_start(self, cold_start: base.ColdStartList) -> None:
        with _errors():
            self.client.set(self.key("cold_start"), base.encode_cold_start(cold_start))

    def get_cold_start(self) -> base.ColdStartList | None:
        with _errors():
            blob = self.client.get(self.key("cold_start"))
        return None if blob is None else base.decode_cold_start(blob)

    # -- the speed layer's recent clicks ----------------------------------------------------------

    def add_recent_clicks(self, clicks: Iterable[tuple[str, str, int]]) -> None:
        pipe = self.client.pipeline(transaction=True)
        for user_id, article_id, viewed_at_us in clicks:
            pipe.zadd(self.key(f"clicks:{user_id}"), {f"{article_id}\0{viewed_at_us}": viewed_at_us})
            pipe.zadd(self.key("clicks"), {f"{user_id}\0{article_id}\0{viewed_at_us}": viewed_at_us})
        with _errors():
            pipe.execute()

    def recent_clicks(self, user_ids: Sequence[str], after_us: int) -> dict[str, list[tuple[str, int]]]:
        pipe = self.client.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.zrevrangebyscore(self.key(f"clicks:{user_id}"), "+inf", f"({after_us}")
        with _errors():
            found = pipe.execute()
        return {
            user_id: [(article_id, int(at)) for article_id, at in (m.decode().split("\0") for m in members)]
            for user_id, members in zip(user_ids, found, strict=True)
        }

    def forget_recent_clicks(self, before_us: int) -> int:
        with _errors():
            members = self.client.zrangebyscore(self.key("clicks"), "-inf", before_us)
            pipe = self.client.pipeline(transaction=True)
            for user_id in {m.decode().split("\0")[0] for m in members}:
                pipe.zremrangebyscore(self.key(f"clicks:{user_id}"), "-inf", before_us)
            pipe.zremrangebyscore(self.key("clicks"), "-inf", before_us)
            pipe.execute()
        return len(members)


class RedisArticleCache(_Keys, base.ArticleCache):
    """Article metadata and vectors in Redis (same URL and prefix as the lists)."""

    def __init__(
        self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "newsrec", socket_timeout: float = 2.0
    ):
        super().__init__(prefix)
        self.client = _client(url, socket_timeout)

    def close(self) -> None:
        self.client.close()

    def upsert_articles(self, articles: Iterable[base.ArticleMeta]) -> int:
        written = 0
        with _errors():
            for chunk in base.batched(articles, 1000):
                pipe = self.client.pipeline(transaction=True)
                pipe.hset(self.key("articles"), mapping={a.article_id: _article_json(a) for a in chunk})
                pipe.zadd(
                    self.key("articles_by_pub"), {a.article_id: base.to_us(a.published_at) for a in chunk}
                )
                pipe.incr(self.key("article_rev"))
                pipe.execute()
                written += len(chunk)
        return written

    def delete_articles(self, article_ids: Iterable[str]) -> int:
        ids = list(article_ids)
        if ids:
            with _errors():
                pipe = self.client.pipeline(transaction=True)
                pipe.hdel(self.key("articles"), *ids).zrem(self.key("articles_by_pub"), *ids)
                pipe.hdel(self.key("artvec"), *ids).incr(self.key("article_rev")).execute()
        return len(ids)

    def get_articles(self, article_ids: Sequence[str]) -> dict[str, base.ArticleMeta]:
        if not article_ids:
            return {}
        with _errors():
            raws = self.client.hmget(self.key("articles"), list(article_ids))
        return articles_from_json(article_ids, raws)

    def recent_articles(self, limit: int) -> list[base.ArticleMeta]:
        with _errors():
            ids = [
                raw.decode()
                for raw in self.client.zrevrange(self.key("articles_by_pub"), 0, max(0, limit - 1))
            ]
        found = self.get_articles(ids) if limit > 0 else {}
        return [found[article_id] for article_id in ids if article_id in found]

    def article_revision(self) -> int:
        with _errors():
            return int(self.client.get(self.key("article_rev")) or 0)

    def put_article_vectors(self, article_ids: Sequence[str], vectors: np.ndarray, model_version: str) -> int:
        header = _vector_header(model_version)
        rows = base.vector_rows(article_ids, vectors)
        with _errors():
            for chunk in base.batched(rows, 1000):
                self.client.hset(self.key("artvec"), mapping={a: header + blob for a, blob in chunk})
        return len(rows)

    def get_fresh_articles(self, published_after: datetime, model_version: str) -> base.FreshArticles:
        with _errors():
            pairs = self.client.zrangebyscore(
                self.key("articles_by_pub"), f"({base.to_us(published_after)}", "+inf", withscores=True
            )
            blobs = self.client.hmget(self.key("artvec"), [raw for raw, _ in pairs]) if pairs else []
        header = _vector_header(model_version)
        rows = [
            (raw.decode(), int(score), blob[len(header) :])
            for (raw, score), blob in zip(pairs, blobs, strict=True)
            if blob is not None and blob.startswith(header)  # of this model version
        ]
        return base.FreshArticles.of(model_version, rows)


class AsyncRedisReads(_Keys):
    """The API's per-request reads on `redis.asyncio`; make and close it on the serving event loop."""

    def __init__(self, url: str, *, prefix: str = "newsrec", socket_timeout: float = 2.0) -> None:
        super().__init__(prefix)
        self.client = _client(url, socket_timeout, redis.asyncio)
        self._script = self.client.register_script(_READ_LUA)

    async def _read(self, call: Any) -> Any:
        """`await call()`, once more if the server had closed the connection (it reconnects)."""
        for attempt in (1, 2):
            try:
                return await call()
            except redis_errors.ConnectionError as error:
                if attempt == 2:
                    raise _redis_error(error) from error
            except redis_errors.RedisError as error:
                raise _redis_error(error) from error

    async def get_recommendations(self, user_id: str) -> base.UserRecommendations | None:
        blob = await self._read(lambda: self._script(keys=self.live, args=[user_id, *self.batch]))
        return None if blob is None else base.decode_record(user_id, blob)

    async def get_articles(self, article_ids: Sequence[str]) -> dict[str, base.ArticleMeta]:
        raws = await self._read(lambda: self.client.hmget(self.key("articles"), list(article_ids)))
        return articles_from_json(article_ids, raws)

    async def close(self) -> None:
        await self.client.aclose()


def _model_json(version: str) -> bytes:
    # Without metadata, which readers of the same key before the port's split take as empty.
    return orjson.dumps({"version": version, "updated_at_us": base.to_us(base.now_utc())})


def _vector_header(model_version: str) -> bytes:
    version = model_version.encode()
    return _VECTOR_HEADER.pack(len(version)) + version


def _article_json(article: base.ArticleMeta) -> bytes:
    fields = {"title": article.title, "category": article.category, "subcategory": article.subcategory}
    return orjson.dumps(fields | {"published_at_us": base.to_us(article.published_at), "url": article.url})


def articles_from_json(
    article_ids: Sequence[str], raws: Sequence[bytes | None]
) -> dict[str, base.ArticleMeta]:
    found = {}
    for article_id, raw in zip(article_ids, raws, strict=True):
        if raw is not None:
            d = orjson.loads(raw)
            found[article_id] = base.ArticleMeta(
                article_id,
                d["title"],
                d["category"],
                d["subcategory"],
                base.from_us(d["published_at_us"]),
                d.get("url"),
            )
    return found
