"""Batch layer by user shard on synthetic data: each shard's lists, staged, then one atomic flip.

The same code path as the `batch_shard_lists` / `batch_recommendations` assets after their
warehouse reads: numpy user encoding over padded click histories, prior-folded ranking vectors,
chunked matmul + top-k with already-clicked articles left out, `stage_shard` into a SQLite
online store, then `publish_shards`. Each shard runs in a fresh process (as each partition runs
in its own run or pod), one after the other, so its wall time and peak memory (RSS high-water
mark) are its own; a cycle's wall time with the shards side by side is the slowest shard plus
the publish.

Standalone: `python -m bench.batch_layer --users 1000000 --articles 10000 --shards 1 2`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

WATERMARK = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def _shard(
    path: str, shard: int, shards: int, users: int, articles: int, dim: int, history: int, k: int, seed: int
) -> dict:
    """One shard's work in this (fresh) process: returns its timings and peak RSS."""
    import torch

    from newsrec_assets.domain.naml import NamlConfig, NamlModel, user_encoder_numpy_params
    from newsrec_assets.domain.recommend import (
        NO_ARTICLE,
        encode_user_histories,
        rank_for_users,
        ranking_vectors,
    )
    from newsrec_assets.domain.sharding import user_hash
    from newsrec_assets.resources.online_store.base import UserRecommendations
    from newsrec_assets.resources.online_store.sqlite import SQLiteListStore

    started = time.perf_counter()
    timings = {}
    rng = np.random.default_rng([seed, shard])
    torch.manual_seed(seed)
    params = user_encoder_numpy_params(NamlModel(NamlConfig(news_dim=dim)))
    news = np.random.default_rng(seed).normal(size=(articles, dim)).astype(np.float32)
    priors = np.random.default_rng(seed + 1).normal(size=articles).astype(np.float32)
    user_ids = [u for u in (f"u{i:07d}" for i in range(users)) if user_hash(u) % shards == shard]
    n = len(user_ids)
    lengths = rng.integers(1, history + 1, size=n)
    history_rows = rng.integers(0, articles, size=(n, history)).astype(np.int32)
    history_rows[np.arange(history)[None, :] >= lengths[:, None]] = NO_ARTICLE
    article_ids = np.array([f"a{i:06d}" for i in range(articles)], dtype=object)
    timings["generate_s"] = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    generate_cpu_s = usage.ru_utime + usage.ru_stime

    clock = time.perf_counter()
    user_vectors = encode_user_histories(params, news, history_rows)
    timings["encode_users_s"] = time.perf_counter() - clock
    clock = time.perf_counter()
    ranking_users, ranking_news = ranking_vectors(user_vectors, news, priors)
    top_index, top_scores = rank_for_users(ranking_users, ranking_news, history_rows, np.arange(articles), k)
    timings["score_top_k_s"] = time.perf_counter() - clock

    def records():
        for user, user_id in enumerate(user_ids):
            finite = np.isfinite(top_scores[user])
            yield UserRecommendations(
                user_id=user_id,
                article_ids=tuple(article_ids[top_index[user][finite]]),
                scores=top_scores[user][finite],
                model_version="naml-bench",
                layer="batch",
                computed_at=WATERMARK,
                watermark=WATERMARK,
                user_vector=ranking_users[user],
            )

    clock = time.perf_counter()
    with SQLiteListStore(path) as store:
        store.stage_shard("bench", shard, records(), model_version="naml-bench")
    timings["stage_s"] = time.perf_counter() - clock
    timings["wall_s"] = time.perf_counter() - started - timings["generate_s"]  # the data is not the work
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # CPU seconds too: on a machine shared with other work they move less than the wall time.
    timings["cpu_s"] = usage.ru_utime + usage.ru_stime - generate_cpu_s
    return {"shard": shard, "users": n, "peak_rss_mb": round(usage.ru_maxrss / 1024), **timings}


def measure(
    users: int,
    articles: int,
    shards: int,
    log,
    dim: int = 128,
    history: int = 50,
    k: int = 100,
    seed: int = 0,
) -> dict:
    from newsrec_assets.resources.online_store.sqlite import SQLiteListStore

    results = []
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "online_store.sqlite")
        context = multiprocessing.get_context("spawn")  # a fresh process: its own peak memory
        for shard in range(shards):
            with context.Pool(1) as pool:
                result = pool.apply(_shard, (path, shard, shards, users, articles, dim, history, k, seed))
            log(
                f"shard {shard}/{shards}: {result['users']:,} users in {result['wall_s']:.1f} s "
                f"(encode {result['encode_users_s']:.1f}, top-k {result['score_top_k_s']:.1f}, "
                f"stage {result['stage_s']:.1f}; {result['cpu_s']:.1f} CPU s), "
                f"peak RSS {result['peak_rss_mb']:,} MB"
            )
            results.append(result)
        clock = time.perf_counter()
        with SQLiteListStore(path) as store:
            published = store.publish_shards(shards)
        publish_s = time.perf_counter() - clock
    assert published.published and published.users_written == users, published
    log(f"publish (flip + clean-up) of {users:,} users: {publish_s:.1f} s")
    return {
        "users": users,
        "articles": articles,
        "shards": shards,
        "per_shard": results,
        "publish_s": publish_s,
        "slowest_shard_s": max(r["wall_s"] for r in results),
        "sequential_s": sum(r["wall_s"] for r in results) + publish_s,
        "side_by_side_s": max(r["wall_s"] for r in results) + publish_s,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
        "cpu_s": sum(r["cpu_s"] for r in results),
    }


def run(ctx):
    from bench.report import Figure, Outcome

    users = ctx.size(1_000_000, 5_000, "batch_layer.users")
    articles = ctx.size(10_000, 1_000, "batch_layer.articles")
    figures, details = [], {}
    for shards in (1, 2):
        result = measure(users, articles, shards, ctx.log)
        details[f"shards_{shards}"] = result
        label = f"batch layer, {users:,} users × {articles:,} articles, {shards} shard{'s' * (shards > 1)}"
        figures += [
            Figure(f"{label}: wall per shard (slowest) + publish", result["side_by_side_s"], "s", None, None),
            Figure(f"{label}: peak memory per shard", result["peak_rss_mb"], "MB", None, None),
            Figure(f"{label}: of which publish (flip)", result["publish_s"], "s", None, None),
        ]
    cpu = "; ".join(
        f"{r['shards']} shard{'s' * (r['shards'] > 1)}: "
        + ", ".join(f"{s['cpu_s']:.1f}" for s in r["per_shard"])
        for r in details.values()
    )
    notes = [
        "Each shard in a fresh process, one after the other (its wall time and peak RSS are its own); "
        f"CPU seconds per shard ({cpu}) move less than wall time on a shared machine. "
        "10M users on paper: docs/scaling.md."
    ]
    return Outcome(figures=figures, details=details, notes=notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--articles", type=int, default=10_000)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    print(json.dumps([measure(args.users, args.articles, s, log) for s in args.shards], indent=2))


if __name__ == "__main__":
    main()
