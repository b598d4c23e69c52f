"""Endpoint: `GET /v1/users/{id}/recommendations` at a fixed 2,000 req/s, SQLite and Redis.

Set-up
------
- **Online store.** 1M users (`--quick`: 20k), each a ranked list of 100 article ids with scores
  and a 128-d float32 user vector, published as one batch generation (`publish_batch`) with
  5,000 articles of metadata, their vectors, the model version and a cold-start list. Eight
  articles are published *after* the lists were computed, so every request also does the
  read-time fresh-article merge, as in production between two batch runs. The SQLite file is
  kept in the cache folder between runs (keyed by the parameters, rebuilt after 24 h) and read
  once before each SQLite server starts, so that it is in the page cache; Redis is filled under a
  dedicated key prefix and that prefix is deleted afterwards. Fill times are reported.
- **Servers.** uvicorn on 127.0.0.1 with uvloop and httptools, access log off, 1 worker and
  2 workers. The same uvicorn settings serve the **bare ASGI app** (`bench.bare_app`), a raw ASGI
  callable answering a pre-rendered body of the same size from an in-memory dict: the floor of
  what uvicorn itself costs on this machine. In each round the bare app is also run **spending
  the SQLite API's extra CPU per request** (measured in that round) doing nothing else: how much
  of the API's tail its CPU cost alone explains on this machine.
- **Load.** `bench/loadgen.c` (compiled on first use with the system C compiler), a wrk2-style
  open-loop generator: request i is scheduled at i / rate, goes out on the next idle keep-alive
  connection in round-robin order (32), and its latency is counted from its *scheduled* time, so
  queueing is never
  hidden (no coordinated omission). Users are drawn uniformly from all filled users. Warm-up
  first, then the measured window; each target is measured in interleaved rounds (bare, SQLite,
  Redis, bare, ...) and the median over rounds is reported; ratios to the bare app are taken
  within each round (the same minutes of machine noise) and then their median.

Goals: p99 <= 10 ms at 2,000 req/s sustained and <= 5 ms at 1,000 req/s, no failed requests. The
ratio to the bare app's p99 is reported to read the tail by, not held to a goal: on a 2-core
machine shared with the load generator the CPU-matched bare app alone misses any small ratio.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    REPO_ROOT,
    Context,
    CpuMonitor,
    free_port,
    listening_processes,
    process_tree_cpu_seconds,
    timed,
)
from bench.report import Figure, Outcome, markdown_table

GOAL_P99_MS = 10.0
# Below saturation (the curve's 1,000 req/s point).
GOAL_P99_MS_AT_1000 = 5.0
# The capacity run's offer: above what even the bare app completes here (31,000-37,000 req/s).
CAPACITY_OFFER_RPS = 100_000.0
CAPACITY_OFFER_VS_RATE = 50
LIST_LENGTH = 100
DIM = 128
N_ARTICLES = 5000
N_FRESH = 8
MODEL_VERSION = "naml-bench000000000"
CACHE_FORMAT = 2  # 2: 16 KB SQLite pages
USER_FMT = "u{:07d}"
BARE_APP = "bench.bare_app:app"
# The bare app spending the SQLite API's extra CPU per request (`bench.bare_app`).
CPU_MATCHED = "bare+cpu"
PATH_FMT = "/v1/users/u%07ld/recommendations"


# ---------------------------------------------------------------------------------------------
# the store


def article_id(index: int) -> str:
    return f"a{index + 1:06d}"


def generate_records(n_users: int, computed_at: datetime, seed: int, chunk: int = 10_000) -> Iterator[Any]:
    """UserRecommendations for users u0000000.. (numpy-generated, distinct ids per list)."""
    from newsrec_assets.resources.online_store.base import UserRecommendations

    rng = np.random.default_rng(seed)
    names = [article_id(i) for i in range(N_ARTICLES)]
    steps = np.array([s for s in range(1, 200) if np.gcd(s, N_ARTICLES) == 1])  # distinct ids per list
    positions = np.arange(LIST_LENGTH)
    watermark = computed_at - timedelta(minutes=1)
    for start in range(0, n_users, chunk):
        n = min(chunk, n_users - start)
        rows = (
            rng.integers(0, N_ARTICLES, n)[:, None] + rng.choice(steps, n)[:, None] * positions
        ) % N_ARTICLES
        scores = -np.sort(-rng.random((n, LIST_LENGTH), dtype=np.float32) * 4.0, axis=1)
        vectors = rng.standard_normal((n, DIM), dtype=np.float32)
        for i in range(n):
            yield UserRecommendations(
                user_id=USER_FMT.format(start + i),
                article_ids=[names[j] for j in rows[i].tolist()],
                scores=scores[i],
                model_version=MODEL_VERSION,
                layer="batch",
                computed_at=computed_at,
                watermark=watermark,
                user_vector=vectors[i],
            )


def prepare_articles(lists, articles, computed_at: datetime, now: datetime, seed: int) -> None:
    """Metadata and vectors of 5,000 articles (7 days before the lists) plus 8 fresh ones."""
    from newsrec_assets.domain.simulator.vocabulary import ArticleTextGenerator, Taxonomy
    from newsrec_assets.resources.online_store.base import ArticleMeta, ColdStartList

    rng = np.random.default_rng(seed + 1)
    taxonomy = Taxonomy.default()
    text = ArticleTextGenerator(taxonomy)
    total = N_ARTICLES + N_FRESH
    span = timedelta(days=7).total_seconds()
    published = [
        computed_at - timedelta(seconds=float(s)) for s in np.sort(rng.random(N_ARTICLES) * span)[::-1]
    ]
    gap = (now - computed_at) / (N_FRESH + 1)
    published += [computed_at + gap * (i + 1) for i in range(N_FRESH)]
    subcategories = rng.integers(0, taxonomy.n_subcategories, total)
    metas = [
        ArticleMeta(
            article_id=article_id(i),
            title=text.title(rng, int(subcategories[i])),
            category=taxonomy.categories[taxonomy.subcategory_category[subcategories[i]]],
            subcategory=taxonomy.subcategories[subcategories[i]],
            published_at=published[i],
            url=None,
        )
        for i in range(total)
    ]
    articles.upsert_articles(metas)
    articles.put_article_vectors(
        [m.article_id for m in metas], rng.standard_normal((total, DIM), dtype=np.float32), MODEL_VERSION
    )
    lists.set_model_version(MODEL_VERSION)
    lists.put_cold_start(
        ColdStartList(
            article_ids=tuple(article_id(i) for i in range(LIST_LENGTH)),
            scores=np.linspace(1, 0, LIST_LENGTH),
            computed_at=computed_at,
            model_version=MODEL_VERSION,
        )
    )


@dataclass
class FilledStore:
    backend: str
    users: int
    fill_seconds: float
    size_bytes: int | None
    reused: bool
    env: dict[str, str]
    cleanup: Any = None
    warm: Any = None


def warm_store(ctx: Context, stores: list[FilledStore], backend: str) -> None:
    """Bring the named store's file into the page cache before a server reads it: this VM's kernel
    reclaims idle page cache (DAMON), and a share of the lookups would otherwise read the disk."""
    for store in stores:
        if store.backend == backend and store.warm:
            ctx.log(f"endpoint: {backend} file read into the page cache in {store.warm():.1f} s")


class MemoryPin:
    """A file's pages held in RAM (mapped and `mlock`ed by this process) until `close()`.

    Reading the file into the page cache before a run is not enough on this VM: DAMON pages out
    what was not touched for about a minute, and uniform random lookups over 1M users leave most
    pages untouched that long, so a share of the lookups fault back in from the disk mid-run (118
    and 199 major faults in the server over 30,000 requests, measured twice; none with the file
    pinned). A server keeping its store in RAM is the setup being measured, as the bare app keeps
    its dict. Locking needs the right to (root, CAP_IPC_LOCK or a high enough RLIMIT_MEMLOCK):
    `of` returns None where it is refused.
    """

    _PROT_READ, _MAP_SHARED = 1, 1

    def __init__(self, address: int, size: int, munmap: Any) -> None:
        self.address, self.size, self._munmap = address, size, munmap

    @classmethod
    def of(cls, path: Path) -> MemoryPin | None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
        ]
        libc.mlock.argtypes = libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        size = path.stat().st_size
        with open(path, "rb") as file:
            address = libc.mmap(None, size, cls._PROT_READ, cls._MAP_SHARED, file.fileno(), 0)
        if address in (None, ctypes.c_void_p(-1).value):
            return None
        if libc.mlock(address, size) != 0:  # faults every page in, then keeps it
            libc.munmap(address, size)
            return None
        return cls(address, size, libc.munmap)

    def close(self) -> None:
        self._munmap(self.address, self.size)  # unlocks too


def read_through(path: Path, chunk: int = 8 << 20) -> float:
    """Read a file once, front to back, so that it sits in the page cache; returns the seconds."""
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as file:
        while file.read(chunk):
            pass
    return time.perf_counter() - start


def sqlite_store(ctx: Context, n_users: int) -> FilledStore:
    """The filled SQLite lists file, from the cache when it is there and younger than 24 h."""
    from newsrec_assets.resources.online_store.sqlite import SQLiteArticleCache, SQLiteListStore

    key = hashlib.sha256(
        json.dumps([CACHE_FORMAT, n_users, LIST_LENGTH, DIM, N_ARTICLES, ctx.seed]).encode()
    ).hexdigest()[:12]
    folder = ctx.cache_dir / f"endpoint-sqlite-{n_users}-{key}"
    path, meta_path = folder / "lists.sqlite", folder / "meta.json"
    now = datetime.now(UTC)
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
    if meta and now - datetime.fromisoformat(meta["computed_at"]) > timedelta(hours=24):
        ctx.log("endpoint: cached SQLite store older than 24 h, rebuilding")
        meta = None
    if meta is None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        computed_at = now - timedelta(minutes=10)
        ctx.log(f"endpoint: filling SQLite with {n_users:,} users ({path})")
        store = SQLiteListStore(path)
        try:
            result, seconds = timed(
                lambda: store.publish_batch(
                    generate_records(n_users, computed_at, ctx.seed),
                    model_version=MODEL_VERSION,
                    chunk_size=5000,
                )
            )
            assert result.published and result.users_written == n_users, result
            store._lists.get().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            store.close()
        meta = {"computed_at": computed_at.isoformat(), "fill_seconds": seconds, "users": n_users}
        meta_path.write_text(json.dumps(meta))
        ctx.log(f"endpoint: SQLite filled in {seconds:.0f} s, {path.stat().st_size / 2**30:.2f} GiB")
        reused = False
    else:
        ctx.log(f"endpoint: reusing the cached SQLite store {path} (filled in {meta['fill_seconds']:.0f} s)")
        reused = True
    store, articles = SQLiteListStore(path), SQLiteArticleCache(path)
    try:
        prepare_articles(store, articles, datetime.fromisoformat(meta["computed_at"]), now, ctx.seed)
        store._lists.get().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        store.close()
        articles.close()
    return FilledStore(
        "sqlite",
        n_users,
        meta["fill_seconds"],
        path.stat().st_size,
        reused,
        {"NEWSREC_STORE_BACKEND": "sqlite", "NEWSREC_SQLITE_PATH": str(path)},
        None,
        lambda: read_through(path),
    )


def redis_store(ctx: Context, n_users: int, url: str) -> FilledStore:
    """Redis filled under a fresh prefix; `cleanup` deletes every key of that prefix."""
    from newsrec_assets.resources.online_store.redis import RedisArticleCache, RedisListStore

    prefix = f"newsrec-bench-{os.getpid()}"
    store = RedisListStore(url, prefix=prefix, socket_timeout=30)
    articles = RedisArticleCache(url, prefix=prefix, socket_timeout=30)
    store.ping()
    before = store.client.info("memory")["used_memory"]
    now = datetime.now(UTC)
    computed_at = now - timedelta(minutes=10)
    ctx.log(f"endpoint: filling Redis ({url}, prefix {prefix}) with {n_users:,} users")
    try:
        result, seconds = timed(
            lambda: store.publish_batch(
                generate_records(n_users, computed_at, ctx.seed), model_version=MODEL_VERSION, chunk_size=2000
            )
        )
        assert result.published and result.users_written == n_users, result
        prepare_articles(store, articles, computed_at, now, ctx.seed)
        used = store.client.info("memory")["used_memory"] - before
    except BaseException:
        store.clear()
        store.close()
        raise
    ctx.log(f"endpoint: Redis filled in {seconds:.0f} s, {used / 2**30:.2f} GiB")

    def cleanup() -> None:
        deleted = store.clear()
        ctx.log(f"endpoint: deleted the {deleted} Redis keys of prefix {prefix}")
        store.close()

    return FilledStore(
        "redis",
        n_users,
        seconds,
        used,
        False,
        {"NEWSREC_STORE_BACKEND": "redis", "NEWSREC_REDIS_URL": url, "NEWSREC_REDIS_PREFIX": prefix},
        cleanup,
    )


# ---------------------------------------------------------------------------------------------
# the load generator and the servers


def build_loadgen(ctx: Context) -> Path:
    """Compile bench/loadgen.c once per source version (cached)."""
    source = Path(__file__).with_name("loadgen.c")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    binary = ctx.cache_dir / f"loadgen-{digest}"
    if not binary.exists():
        binary.parent.mkdir(parents=True, exist_ok=True)
        compiler = shutil.which(os.getenv("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
        if compiler is None:
            raise RuntimeError(
                "the endpoint benchmark needs a C compiler (apt-get install gcc) for bench/loadgen.c"
            )
        tmp = binary.with_suffix(".tmp")
        subprocess.run([compiler, "-O2", "-o", str(tmp), str(source)], check=True)
        tmp.rename(binary)
    return binary


class Server:
    """An ASGI app served in a subprocess (its own process group), from `cwd`: this checkout, or
    another one to compare with (`bench.ab`). `python -m serving` where the checkout has it (a
    listener per worker), `uvicorn` otherwise."""

    HEALTH_PATH = "/healthz"

    def __init__(
        self, app: str, workers: int, env: dict[str, str], log_path: Path, cwd: Path = REPO_ROOT
    ) -> None:
        self.port = free_port()
        self.workers = workers
        loop = "uvloop" if _importable("uvloop") else "auto"
        # `UVICORN_HTTP` picks another `--http` for one server (e.g. an older checkout's own protocol).
        self.loop, self.http = (
            loop,
            env.get("UVICORN_HTTP") or ("httptools" if _importable("httptools") else "auto"),
        )
        common = ["--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers)]
        if (cwd / "serving" / "server.py").exists() and "UVICORN_HTTP" not in env:
            # as the API is run: each worker with its own listener (`python -m serving`)
            command = [sys.executable, "-m", "serving", app, *common, "--log-level", "warning"]
        else:  # an older checkout, as it was run: uvicorn's workers on one shared socket
            command = [
                sys.executable, "-m", "uvicorn", app, *common, "--loop", loop, "--http", self.http,
                "--no-access-log", "--log-level", "warning",
            ]  # fmt: skip
        self.log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}, see {self.log.name}")
            try:
                with urllib.request.urlopen(self.url(self.HEALTH_PATH), timeout=2) as response:
                    # load sent before every worker listens would all land on the first one
                    if (
                        response.status == 200
                        and listening_processes(self.process.pid, self.port) >= self.workers
                    ):
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready after {timeout} s, see {self.log.name}")

    def get_json(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(self.url(path), timeout=10) as response:
            return json.loads(response.read())

    def cpu_seconds(self) -> float:
        return process_tree_cpu_seconds(self.process.pid)

    def request_args(self) -> list[str]:
        """The load generator's options for this server's request (a GET of a user's list)."""
        return ["-p", PATH_FMT]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log.close()


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def drive(loadgen: Path, server: Server, users: int, rate: float, warmup: float, duration: float, seed: int):
    """Run the load generator against a server; its JSON summary plus CPU seconds spent."""
    command = [
        str(loadgen), "-r", str(rate), "-d", str(duration), "-w", str(warmup), "-c", "32",
        "-n", str(users), *server.request_args(), "-P", str(server.port), "-s", str(seed), "-t", "5",
    ]  # fmt: skip
    server_cpu0 = server.cpu_seconds()
    own0 = os.times()
    monitor = CpuMonitor().start()
    monitor.track(server.process.pid)
    completed = subprocess.run(command, capture_output=True, text=True, timeout=warmup + duration + 60)
    usage = monitor.stop()
    own1 = os.times()
    if completed.returncode != 0:
        raise RuntimeError(f"loadgen failed: {completed.stderr}")
    summary = json.loads(completed.stdout)
    summary["server_cpu_s"] = server.cpu_seconds() - server_cpu0
    summary["others_cores"] = usage["others_cores"]
    summary["loadgen_cpu_s"] = (own1.children_user - own0.children_user) + (
        own1.children_system - own0.children_system
    )
    return summary


def fresh_merge_check(env: dict[str, str], n_users: int, sample: int = 200) -> str:
    """How much read-time fresh-article merging each response does, from the serving code itself."""
    import asyncio

    from serving.core.config import Settings
    from serving.core.metrics import Metrics
    from serving.core.store import DirectReads, open_stores
    from serving.services.recommender import Recommender

    settings = Settings(
        store_backend=env["NEWSREC_STORE_BACKEND"],
        sqlite_path=env.get("NEWSREC_SQLITE_PATH", "unused.sqlite"),
        redis_url=env.get("NEWSREC_REDIS_URL", "redis://127.0.0.1:6379/0"),
        redis_prefix=env.get("NEWSREC_REDIS_PREFIX", "newsrec"),
        landing_kind="local",
    )
    stores = open_stores(settings)
    recommender = Recommender(stores, settings, Metrics())
    recommender.reads = DirectReads(stores)

    async def check() -> tuple[list[int], list[int]]:
        candidates, served = [], []
        for i in np.random.default_rng(0).integers(0, n_users, sample):
            user = USER_FMT.format(int(i))
            fresh = recommender._fresh_after(stores.lists.get_recommendations(user))
            candidates.append(0 if fresh is None else len(fresh[0]))
            body = await recommender.recommend(user, 10, "check")
            served.append(body["provenance"]["fresh_merged"])
        return candidates, served

    try:
        candidates, served = asyncio.run(check())
    finally:
        stores.lists.close()
        stores.articles.close()
    return f"{np.mean(candidates):.1f} fresh candidates, {np.mean(served):.1f} of 10 served are fresh"


# ---------------------------------------------------------------------------------------------
# the benchmark


def run(ctx: Context) -> Outcome:
    users = ctx.size(1_000_000, 20_000, "endpoint.users")
    redis_users = ctx.size(users, users, "endpoint.redis_users")
    rate = ctx.size(2000.0, 2000.0, "endpoint.rate")
    warmup = ctx.size(5.0, 2.0, "endpoint.warmup_s")
    duration = ctx.size(20.0, 5.0, "endpoint.duration_s")
    rounds = ctx.size(2, 1, "endpoint.rounds")
    worker_counts = [
        int(w) for w in str(ctx.option("endpoint.workers", "1,2" if not ctx.quick else "1")).split(",")
    ]
    redis_url = ctx.option("endpoint.redis_url", "redis://127.0.0.1:6379/0")
    with_redis = ctx.option("endpoint.redis", True)
    # The API logs every served list (a batch write every 0.2 s); false measures the API without it.
    log_exposures = ctx.option("endpoint.log_exposures", True)
    capacity_s = ctx.size(4.0, 2.0, "endpoint.capacity_s")
    curve_rates = [
        float(r)
        for r in str(ctx.option("endpoint.curve_rates", "1000" if ctx.quick else "500,1000")).split(",")
        if r
    ]
    curve_s = ctx.size(10.0, 3.0, "endpoint.curve_duration_s")
    cpu_matched = ctx.option("endpoint.cpu_matched", True)

    loadgen = build_loadgen(ctx)
    stores = [sqlite_store(ctx, users)]
    notes: list[str] = [
        "The API logs every served list as impressions in the landing zone, as in production."
        if log_exposures
        else "Exposure log off (`--set endpoint.log_exposures=false`): not how production runs.",
    ]
    pin = (
        MemoryPin.of(Path(stores[0].env["NEWSREC_SQLITE_PATH"])) if ctx.option("endpoint.pin", True) else None
    )
    if pin is not None:
        stores[0].warm = None
        notes.append(
            "The SQLite lists file is held in RAM (mapped and mlock-ed by the benchmark process) while "
            "the servers run: this VM's kernel pages out idle page cache (DAMON, kdamond) within about "
            "a minute, and uniform random lookups then read the disk (bench/endpoint.py, `MemoryPin`)."
        )
    else:
        notes.append(
            "Before each SQLite server starts, the lists file is read once so that it is in the page "
            "cache (it could not be locked in RAM: no right to mlock, or `--set endpoint.pin=false`); "
            "this VM's kernel pages out idle page cache (DAMON), so some lookups may still read the disk."
        )
    try:
        if with_redis:
            try:
                stores.append(redis_store(ctx, redis_users, redis_url))
            except Exception as error:  # noqa: BLE001 - Redis down: report SQLite alone
                notes.append(f"Redis not measured: {error}")
                ctx.log(f"endpoint: Redis unavailable ({error}); SQLite only")
        targets: list[tuple[str, str, dict[str, str], int]] = [("bare", BARE_APP, bare_env(users), users)]
        for store in stores:
            env = api_env(ctx, store, {"NEWSREC_LOG_EXPOSURES": str(log_exposures).lower()})
            targets.append((store.backend, "serving.main:app", env, store.users))
        if cpu_matched:
            targets.append((CPU_MATCHED, BARE_APP, bare_env(users), users))

        runs: list[dict[str, Any]] = []
        fresh_merged: dict[str, int] = {}
        for workers in worker_counts:
            for round_ in range(rounds):
                for name, app, env, n_users in targets:
                    spent_us = None
                    if name == CPU_MATCHED:
                        spent_us = extra_cpu_us(runs, "sqlite", workers, round_ + 1)
                        if spent_us is None:
                            continue
                        env = bare_env(users, spent_us)
                    warm_store(ctx, stores, name)
                    server = Server(app, workers, env, ctx.work_dir / f"server-{name}-{workers}.log")
                    try:
                        server.wait_ready()
                        if name in ("sqlite", "redis"):
                            body = server.get_json(
                                f"/v1/users/{USER_FMT.format(n_users - 1)}/recommendations"
                            )
                            assert body["provenance"]["layer"] == "batch", body["provenance"]
                            if name not in fresh_merged:
                                fresh_merged[name] = fresh_merge_check(env, n_users)
                        ctx.log(
                            f"endpoint: {name}, {workers} worker(s), round {round_ + 1}/{rounds}: "
                            f"{rate:,.0f} req/s for {warmup:g}+{duration:g} s"
                        )
                        summary = drive(loadgen, server, n_users, rate, warmup, duration, ctx.seed + round_)
                        if round_ == 0 and name != CPU_MATCHED:
                            # Capacity: offer far more than the server can take; with every one of the
                            # 32 connections always busy, what completes is the saturated throughput.
                            # An offer the server meets in full measures the offer, not the server.
                            offered = max(CAPACITY_OFFER_VS_RATE * rate, CAPACITY_OFFER_RPS)
                            saturated = drive(loadgen, server, n_users, offered, 1.0, capacity_s, ctx.seed)
                            summary["capacity_rps"] = saturated["throughput_rps"]
                            summary["capacity_offered_rps"] = offered
                            summary["capacity_server_cpu_s"] = saturated["server_cpu_s"]
                    finally:
                        server.stop()
                    lat = summary["latency_us"]
                    ctx.log(
                        f"endpoint:   {summary['achieved_rps']:,.0f} req/s, p50 {lat['p50'] / 1000:.2f} ms, "
                        f"p99 {lat['p99'] / 1000:.2f} ms, max {lat['max'] / 1000:.1f} ms, "
                        f"errors {summary['non2xx'] + summary['errors_io'] + summary['timeouts']}"
                    )
                    runs.append(
                        {
                            "target": name,
                            "workers": workers,
                            "round": round_ + 1,
                            **summary,
                            "loop": server.loop,
                            "http": server.http,
                            **({"bare_cpu_us": spent_us} if spent_us is not None else {}),
                        }
                    )
        # Latency at lower fixed rates (1 worker, one round): where the latency goal holds.
        for curve_rate in curve_rates:
            for name, app, env, n_users in targets:
                if name == CPU_MATCHED:
                    continue
                warm_store(ctx, stores, name)
                server = Server(app, 1, env, ctx.work_dir / f"server-{name}-curve.log")
                try:
                    server.wait_ready()
                    ctx.log(f"endpoint: {name}, 1 worker, {curve_rate:,.0f} req/s for 2+{curve_s:g} s")
                    summary = drive(loadgen, server, n_users, curve_rate, 2.0, curve_s, ctx.seed + 7)
                finally:
                    server.stop()
                ctx.log(
                    f"endpoint:   p50 {summary['latency_us']['p50'] / 1000:.2f} ms, "
                    f"p99 {summary['latency_us']['p99'] / 1000:.2f} ms"
                )
                runs.append({"target": name, "workers": 1, "round": "curve", **summary})
    finally:
        if pin is not None:
            pin.close()
        for store in stores:
            if store.cleanup:
                try:
                    store.cleanup()
                except Exception as error:  # noqa: BLE001
                    ctx.log(f"endpoint: cleanup of {store.backend} failed: {error}")
    return summarise(
        runs, stores, worker_counts, rate, duration, warmup, rounds, fresh_merged, notes, capacity_s
    )


def bare_env(users: int, cpu_us: float | None = None) -> dict[str, str]:
    """The environment of a bare app serving `users`, spending `cpu_us` of CPU per request."""
    env = {"NEWSREC_BENCH_BARE_USERS": str(users)}
    if cpu_us is not None:
        env["NEWSREC_BENCH_BARE_CPU_US"] = f"{cpu_us:.0f}"
    return env


def api_env(ctx: Context, store: FilledStore, extra: dict[str, str]) -> dict[str, str]:
    """The environment of an API server reading `store`, its writable folders in the work dir."""
    return {
        **store.env,
        "NEWSREC_HOME": str(ctx.work_dir / "home"),
        "NEWSREC_LANDING_DIR": str(ctx.work_dir / "landing"),
        **extra,
    }


def cpu_us_per_request(run: dict[str, Any]) -> float:
    """The server's CPU microseconds per completed request in a load generator run."""
    return run["server_cpu_s"] / max(1, run["completed"]) * 1e6


def extra_cpu_us(runs: list[dict[str, Any]], target: str, workers: int, round_: int) -> float | None:
    """`target`'s server CPU per request above the bare app's in one round (None without both)."""

    def cpu(name: str) -> float | None:
        return next(
            (
                cpu_us_per_request(r)
                for r in runs
                if r["target"] == name and r["workers"] == workers and r["round"] == round_
            ),
            None,
        )

    api, bare = cpu(target), cpu("bare")
    return None if api is None or bare is None else max(0.0, api - bare)


def failed_requests(run: dict[str, Any]) -> int:
    """Requests of a load generator run that were not answered with a 2xx (or never sent)."""
    return run["non2xx"] + run["errors_io"] + run["timeouts"] + run["unsent"]


def summarise(
    runs, stores, worker_counts, rate, duration, warmup, rounds, fresh_merged, notes, capacity_s
) -> Outcome:
    curve = [r for r in runs if r["round"] == "curve"]
    runs = [r for r in runs if r["round"] != "curve"]

    def of(target: str, workers: int) -> list[dict[str, Any]]:
        return [r for r in runs if r["target"] == target and r["workers"] == workers]

    def median(values: list[float]) -> float:
        return float(statistics.median(values)) if values else float("nan")

    def p99_ms(target: str, workers: int) -> float:
        return median([r["latency_us"]["p99"] / 1000 for r in of(target, workers)])

    def ratio_to_bare(target: str, workers: int) -> float:
        bare = {r["round"]: r["latency_us"]["p99"] for r in of("bare", workers)}
        return median([r["latency_us"]["p99"] / bare[r["round"]] for r in of(target, workers)])

    chosen = min(worker_counts, key=lambda w: p99_ms("sqlite", w))
    backends = [s.backend for s in stores]
    tried = ", ".join(map(str, worker_counts))
    why = (
        f"{chosen} worker(s): the lower SQLite p99 of the worker counts tried ({tried})"
        if len(worker_counts) > 1
        else f"{chosen} worker(s) (only one tried)"
    )
    figures: list[Figure] = []
    bare_p99 = p99_ms("bare", chosen)
    for target in ["bare", *backends]:
        label = {"bare": "bare ASGI app", "sqlite": "SQLite API", "redis": "Redis API"}[target]
        rs = of(target, chosen)
        achieved = median([r["throughput_rps"] for r in rs])
        figures.append(
            Figure(
                f"{label}: throughput at {rate:,.0f} req/s offered ({chosen} worker(s))",
                achieved,
                "req/s",
                0.99 * rate,
                "at_least",
            )
        )
        figures.append(Figure(f"{label}: p50", median([r["latency_us"]["p50"] / 1000 for r in rs]), "ms"))
        if target == "bare":
            figures.append(Figure(f"{label}: p99 (the floor)", p99_ms(target, chosen), "ms"))
        else:
            figures.append(
                Figure(
                    f"{label}: p99 at {rate:,.0f} req/s", p99_ms(target, chosen), "ms", GOAL_P99_MS, "at_most"
                )
            )
            figures.append(
                Figure(
                    f"{label}: p99 / bare ASGI p99",
                    ratio_to_bare(target, chosen),
                    "×",
                    reference=f"bare p99 {bare_p99:.2f} ms, per-round ratio, median of {len(rs)}",
                )
            )
        figures.append(
            Figure(
                f"{label}: failed or never served (errors, non-2xx, timeouts, backlog at the end)",
                float(sum(failed_requests(r) for r in rs)),
                "requests",
                0.0,
                "at_most",
            )
        )
        cpu_us = median([cpu_us_per_request(r) for r in rs])
        figures.append(Figure(f"{label}: server CPU per request", cpu_us, "µs"))
        saturated = [r for r in rs if "capacity_rps" in r]
        capacity = median([r["capacity_rps"] for r in saturated])
        offered = saturated[0]["capacity_offered_rps"] if saturated else float("nan")
        figures.append(
            Figure(
                f"{label}: capacity (saturated, 32 connections, {chosen} worker(s))",
                capacity,
                "req/s",
                rate,
                "at_least",
                note=(
                    f"at least: all {offered:,.0f} req/s offered were served"
                    if capacity >= 0.98 * offered
                    else f"completed per second while {offered:,.0f} req/s were offered"
                ),
            )
        )
        for r in sorted((c for c in curve if c["target"] == target), key=lambda c: c["rate"]):
            held_to_goal = target != "bare" and r["rate"] == 1000
            figures.append(
                Figure(
                    f"{label}: p99 at {r['rate']:,.0f} req/s (1 worker)",
                    r["latency_us"]["p99"] / 1000,
                    "ms",
                    GOAL_P99_MS_AT_1000 if held_to_goal else None,
                    "at_most" if held_to_goal else None,
                    note=f"p50 {r['latency_us']['p50'] / 1000:.2f} ms, {r['throughput_rps']:,.0f} req/s",
                )
            )
    matched = of(CPU_MATCHED, chosen)
    if matched:
        spent = median([r["bare_cpu_us"] for r in matched])
        label = f"bare ASGI app spending the SQLite API's extra CPU ({spent:.0f} µs per request)"
        figures.append(Figure(f"{label}: p99", p99_ms(CPU_MATCHED, chosen), "ms"))
        figures.append(
            Figure(
                f"{label}: p99 / bare ASGI p99",
                ratio_to_bare(CPU_MATCHED, chosen),
                "×",
                reference=f"per-round ratio, median of {len(matched)}",
                note="the tail that CPU cost alone gives here; compare with the SQLite API's ratio",
            )
        )
    for store in stores:
        label = {"sqlite": "SQLite", "redis": "Redis"}[store.backend]
        note = "cached from an earlier run" if store.reused else "this run"
        size = f", {store.size_bytes / 2**30:.2f} GiB" if store.size_bytes else ""
        figures.append(
            Figure(
                f"{label} store fill: {store.users:,} users (publish_batch)",
                store.fill_seconds,
                "s",
                note=f"{note}{size}",
            )
        )

    rows = []
    for r in runs:
        lat = r["latency_us"]
        wall = r["duration_s"] + r["warmup_s"]
        target = f"bare + {r['bare_cpu_us']:.0f} µs CPU" if r["target"] == CPU_MATCHED else r["target"]
        rows.append([
            target, r["workers"], r["round"], r["throughput_rps"], lat["p50"] / 1000, lat["p90"] / 1000,
            lat["p99"] / 1000, lat["p999"] / 1000, lat["max"] / 1000, r["service_us"]["p99"] / 1000,
            failed_requests(r), r["server_cpu_s"] / wall, r["loadgen_cpu_s"] / wall,
            round(r["others_cores"], 2), r.get("capacity_rps", "—"),
        ])  # fmt: skip
    for r in curve:
        lat = r["latency_us"]
        wall = r["duration_s"] + r["warmup_s"]
        rows.append([
            f"{r['target']} at {r['rate']:,.0f} req/s", 1, "—", r["throughput_rps"], lat["p50"] / 1000,
            lat["p90"] / 1000, lat["p99"] / 1000, lat["p999"] / 1000, lat["max"] / 1000,
            r["service_us"]["p99"] / 1000, failed_requests(r), r["server_cpu_s"] / wall,
            r["loadgen_cpu_s"] / wall, round(r["others_cores"], 2), "—",
        ])  # fmt: skip
    table = markdown_table(
        ["target", "workers", "round", "req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms",
         "service p99 ms", "failed", "server cores", "loadgen cores", "others' cores", "capacity req/s"],
        rows,
    )  # fmt: skip
    compared = [*backends, *([CPU_MATCHED] if matched else [])]
    by_workers = markdown_table(
        ["workers", *[f"{t} p99 ms" for t in ["bare", *compared]], *[f"{t} / bare" for t in compared]],
        [
            [w, *[p99_ms(t, w) for t in ["bare", *compared]], *[ratio_to_bare(t, w) for t in compared]]
            for w in worker_counts
        ],
    )
    stack = f"{runs[0]['loop']}/{runs[0]['http']}" if runs else ""
    merged = ", ".join(f"{k}: {v}" for k, v in fresh_merged.items())
    curve_text = ", ".join(f"{r['rate']:,.0f}" for r in curve if r["target"] == "bare") or "no"
    setup = (
        f"Offered load {rate:,.0f} req/s, open loop (bench/loadgen.c, 32 keep-alive connections, latency "
        f"from the scheduled send time), {warmup:g} s warm-up then {duration:g} s measured, {rounds} "
        f"interleaved round(s) per target; then {capacity_s:g} s offered "
        f"max({CAPACITY_OFFER_VS_RATE}x the rate, {CAPACITY_OFFER_RPS:,.0f} req/s) "
        f"for the capacity, and {curve_text} req/s (1 worker, one round) for the latency at lower rates. "
        f"uvicorn {stack}, access log off. Users drawn uniformly from {stores[0].users:,} (SQLite)"
        + (f" and {stores[1].users:,} (Redis)" if len(stores) > 1 else "")
        + f"; every list is 100 items, k=10 served, read-time merge per response: {merged}. "
        + (
            "'bare + N µs CPU': the bare app spending, in each request, the SQLite API's server CPU "
            "per request above the bare app's in the same round, and nothing else. "
            if matched
            else ""
        )
        + f"Headline figures use {why}."
    )
    details = {
        "runs": runs,
        "curve_runs": curve,
        "chosen_workers": chosen,
        "stores": [
            {
                "backend": s.backend,
                "users": s.users,
                "fill_seconds": s.fill_seconds,
                "size_bytes": s.size_bytes,
                "reused": s.reused,
            }
            for s in stores
        ],
        "fresh_merged_per_response": fresh_merged,
        "settings": {
            "rate": rate,
            "warmup_s": warmup,
            "duration_s": duration,
            "rounds": rounds,
            "workers": worker_counts,
        },
    }
    return Outcome(
        figures=figures,
        details=details,
        tables=[
            ("Set-up", setup),
            ("p99 by worker count (median over rounds)", by_workers),
            ("Every run", table),
        ],
        notes=notes,
    )
