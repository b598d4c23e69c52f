"""Batch layer wall time on synthetic data: every user's list, from histories to a published store.

The same code path as the `batch_recommendations` asset after its warehouse reads: numpy user
encoding over padded click histories, prior-folded ranking vectors, chunked matmul + top-k with
already-clicked articles left out, and an atomic `publish_batch` into a SQLite online store.

Standalone: `python -m bench.batch_layer --users 100000 --articles 5000`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np


def measure(
    users: int, articles: int, log, dim: int = 128, history: int = 50, k: int = 100, seed: int = 0
) -> dict:
    import torch

    from newsrec_assets.domain.naml import NamlConfig, NamlModel, user_encoder_numpy_params
    from newsrec_assets.domain.recommend import (
        NO_ARTICLE,
        encode_user_histories,
        rank_for_users,
        ranking_vectors,
    )
    from newsrec_assets.resources.online_store.base import UserRecommendations
    from newsrec_assets.resources.online_store.sqlite import SQLiteListStore

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    params = user_encoder_numpy_params(NamlModel(NamlConfig(news_dim=dim)))
    news = rng.normal(size=(articles, dim)).astype(np.float32)
    priors = rng.normal(size=articles).astype(np.float32)
    lengths = rng.integers(1, history + 1, size=users)
    history_rows = rng.integers(0, articles, size=(users, history)).astype(np.int32)
    history_rows[np.arange(history)[None, :] >= lengths[:, None]] = NO_ARTICLE
    candidate_rows = np.arange(articles)
    article_ids = np.array([f"a{i:06d}" for i in range(articles)], dtype=object)
    user_ids = [f"u{i:07d}" for i in range(users)]
    timings = {}

    started = time.perf_counter()
    user_vectors = encode_user_histories(params, news, history_rows)
    timings["encode_users_s"] = time.perf_counter() - started
    log(f"encoded {users} users in {timings['encode_users_s']:.1f} s")

    started = time.perf_counter()
    ranking_users, ranking_news = ranking_vectors(user_vectors, news, priors)
    top_index, top_scores = rank_for_users(ranking_users, ranking_news, history_rows, candidate_rows, k)
    timings["score_top_k_s"] = time.perf_counter() - started
    log(f"top-{k} of {articles} for {users} users in {timings['score_top_k_s']:.1f} s")

    computed_at = datetime.now(UTC)

    def records():
        for user, user_id in enumerate(user_ids):
            finite = np.isfinite(top_scores[user])
            yield UserRecommendations(
                user_id=user_id,
                article_ids=tuple(article_ids[top_index[user][finite]]),
                scores=top_scores[user][finite],
                model_version="naml-bench",
                layer="batch",
                computed_at=computed_at,
                watermark=computed_at,
                user_vector=ranking_users[user],
            )

    with tempfile.TemporaryDirectory() as folder:
        store = SQLiteListStore(Path(folder) / "online_store.sqlite")
        started = time.perf_counter()
        result = store.publish_batch(records(), model_version="naml-bench")
        timings["publish_s"] = time.perf_counter() - started
        store.close()
    log(f"published {result.users_written} lists in {timings['publish_s']:.1f} s")
    timings["total_s"] = sum(timings.values())
    return {"users": users, "articles": articles, "dim": dim, "k": k, **timings}


def run(ctx):
    from bench.report import Figure, Outcome

    users = ctx.size(100_000, 5_000, "batch_layer.users")
    articles = ctx.size(5_000, 1_000, "batch_layer.articles")
    result = measure(users, articles, ctx.log)
    return Outcome(
        figures=[
            Figure(
                f"batch layer, {users:,} users × {articles:,} articles (encode + top-k + publish)",
                result["total_s"],
                "s",
                None,
                None,
            ),
            Figure("  of which user encoding", result["encode_users_s"], "s", None, None),
            Figure("  of which scoring + top-k", result["score_top_k_s"], "s", None, None),
            Figure("  of which atomic publish to SQLite", result["publish_s"], "s", None, None),
        ],
        details=result,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--articles", type=int, default=5_000)
    args = parser.parse_args()
    result = measure(args.users, args.articles, lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
