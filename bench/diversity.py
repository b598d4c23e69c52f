"""Diversity re-rank on a holdout: what serving's per-subcategory cap costs in nDCG and buys in
intra-list diversity (the table in docs/evaluation.md).

    .venv/bin/python -m bench.diversity [--users 3000 --articles 3000 --days 7]

Data: the news-app simulator's history (`bench.model.simulated_data`); the last 24 h are the
holdout. Every user with a click in it gets a 50-item list (the online store's capacity) from a
personalised ranker fitted on the clicks before the holdout: the log of the user's smoothed share
of clicks in the article's subcategory plus half the log of the article's clicks. Each list goes
through `cap_per_group` (as the API's `diversity_cap` does) and its top 10 is scored against the
articles the user clicked in the holdout (`domain.evaluation.diversity_tradeoff`).
"""

from __future__ import annotations

import argparse

import numpy as np

from bench.model import simulated_data
from newsrec_assets.domain.evaluation import diversity_tradeoff

HOLDOUT_MS = 24 * 3_600_000
LIST_LENGTH = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--articles", type=int, default=3000)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    history, rows = simulated_data(args.users, args.articles, args.days, args.seed)
    live = np.flatnonzero([row is not None for row in rows])
    subcategory_names = sorted({rows[i]["subcategory"] for i in live})
    code = {name: index for index, name in enumerate(subcategory_names)}
    groups = np.array([rows[i]["subcategory"] if rows[i] else "" for i in range(len(rows))])
    article_group = np.array([code.get(name, 0) for name in groups])

    views, start = history.views, history.config.end_ms - HOLDOUT_MS
    before, holdout = views.viewed_ms < start, views.viewed_ms >= start
    counts = np.zeros((history.users.count, len(subcategory_names)))
    np.add.at(counts, (views.user[before], article_group[views.article[before]]), 1.0)
    overall = (counts.sum(axis=0) + 1) / (counts.sum() + len(subcategory_names))
    share = (counts + 5 * overall) / (counts.sum(axis=1, keepdims=True) + 5)
    popularity = np.bincount(views.article[before], minlength=len(rows))

    relevant: dict[int, set[int]] = {}
    for user, article in zip(views.user[holdout].tolist(), views.article[holdout].tolist(), strict=True):
        relevant.setdefault(user, set()).add(article)
    users = sorted(relevant)
    scores = np.log(share[np.ix_(users, article_group[live])]) + 0.5 * np.log1p(popularity[live])
    top = live[np.argsort(-scores, axis=1, kind="stable")[:, :LIST_LENGTH]]
    table = diversity_tradeoff(list(top), [relevant[user] for user in users], groups)

    print(f"{len(users)} holdout users, {len(subcategory_names)} subcategories, lists of {LIST_LENGTH}")
    print("| diversity_cap | nDCG@10 | intra-list diversity@10 |\n|---|---|---|")
    for cap, metrics in table.items():
        print(f"| {cap or 'off'} | {metrics['ndcg@10']:.4f} | {metrics['intra_list_diversity']:.3f} |")


if __name__ == "__main__":
    main()
