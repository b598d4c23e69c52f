"""How close to the oracle can any ranker get on the simulated data? The reachable share of its lift.

The model's evaluation compares NAML's per-impression AUC with the simulator's oracle (the true
click probabilities). The oracle knows three things no recommender does: each user's true interest
mixture, each article's latent quality, and the position the article was shown at (examination
bias). This benchmark measures how much of the oracle's AUC lift over random,
`(AUC - 0.5) / (AUC_oracle - 0.5)`, is reachable from the data at all, by replacing the oracle's
terms one at a time with the best estimates we know how to make from what was observed,
*given the true form and weights of the click model* (a learned model must also learn those):

- **interest**: an empirical-Bayes posterior per (user, subcategory) over the interest logit,
  from the user's impressions, clicked *and* not clicked (a grid posterior with a per-subcategory
  prior fitted by EM on the impressions before the holdout), either from those alone or updated
  with the holdout's own impressions shown before each row (what a system whose features follow
  the impressions knows: the recommender's affinity term does); versus click shares alone, which
  is what an encoder of click histories (NAML's user encoder) sees;
- **quality**: a grid posterior per article from its earlier impressions, debiased by the
  estimated interest, freshness and position;
- **position**: a recommender scores an article before it has a position, so the fair ceiling for
  a ranker leaves it out ("position-blind").

Holdout, AUC and lift are the model evaluation's: the test window (the last 24 hours), articles
deleted by the end dropped, `metrics.evaluate_impressions` and `metrics.auc_lift`. The headline,
`POSITION_BLIND_CEILING`, estimates every term from the impressions before each row and leaves
the position out: the model benchmark (`bench/model.py`) holds NAML to 0.95 of its lift on the
same history in the same run. This benchmark runs it on the default demo data (5.2 sessions per
user per day) and on the sparser users the demo had before (2.6), numpy only, one thread.

Standalone: `python -m bench.ceiling [--sessions 5.2] [--users 3000] [--articles 3000] [--seed 7]`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

MS_PER_HOUR = 3_600_000
# the headline: every term estimated from the impressions shown before each row, position left out
POSITION_BLIND_CEILING = "all estimated from every earlier impression, position-blind"
HOLDOUT_HOURS = 24
INTEREST_GRID = np.linspace(0.0, 4.6, 24)  # interest logit w_int·r + w_cat·r_cat lies in [0, 4.6]
QUALITY_GRID = np.linspace(-2.0, 2.0, 21)  # article quality (true sd 0.5)
SHARE_SMOOTHING = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


@dataclass
class Rows:
    """Impression rows of a simulated history, with the click model's terms per row."""

    user: np.ndarray
    article: np.ndarray
    subcategory: np.ndarray
    category: np.ndarray
    impression: np.ndarray
    shown_ms: np.ndarray
    clicked: np.ndarray
    holdout: np.ndarray
    terms: dict[str, np.ndarray]  # bias, interest, category, freshness, position, quality (logit parts)
    params: Any  # the simulator's ClickModelParams
    stats: dict[str, Any]


def simulate(users: int, articles: int, days: float, sessions: float, seed: int):
    from bench.model import END
    from newsrec_assets.domain.simulator import SimulationConfig, simulate_history

    config = SimulationConfig(
        end=END, seed=seed, users=users, articles=articles, days=days, mean_sessions_per_day=sessions
    )
    return simulate_history(config)


def history_rows(history) -> Rows:
    """The impression rows of a simulated history with the click model's terms per row."""
    from newsrec_assets.domain.simulator.click_model import freshness, position_bias

    config = history.config
    users, articles, days = config.users, history.articles.count, config.days
    impressions, views, oracle, params = history.impressions, history.views, history.oracle, history.params
    from_list = views.impression_number >= 0
    clicked_keys = views.impression_number[from_list] * articles + views.article[from_list]
    clicked = np.isin(impressions.number * articles + impressions.article, clicked_keys)
    deleted = np.zeros(articles, dtype=bool)
    for change in history.article_changes:
        if change.change_type == "DELETE":
            deleted[change.article_index] = True
    keep = ~deleted[impressions.article]  # as the evaluation: deleted articles are not in the marts

    user, article = impressions.user[keep], impressions.article[keep]
    shown_ms, position = impressions.shown_ms[keep], impressions.position[keep]
    subcategory = oracle.article_subcategory[article]
    category = oracle._subcategory_category[subcategory]
    age_ms = shown_ms - oracle.article_published_ms[article]
    terms = {
        "bias": np.full(len(user), params.bias),
        "interest": params.interest_weight * oracle._subcategory_interest[user, subcategory],
        "category": params.category_weight * oracle._category_interest[user, category],
        "freshness": params.freshness_weight * freshness(age_ms, params.freshness_half_life_hours),
        "position": params.position_weight * position_bias(position),
        "quality": oracle.article_quality[article],
    }
    total = sum(terms.values())
    if not np.allclose(_sigmoid(total), oracle.probability_by_index(user, article, shown_ms, position)):
        raise AssertionError("the click model's terms do not add up to the oracle's probabilities")
    holdout = shown_ms >= config.end_ms - HOLDOUT_HOURS * MS_PER_HOUR
    clicks_per_user = np.bincount(views.user[from_list], minlength=users)
    stats = {
        "users": users,
        "articles": articles,
        "days": days,
        "sessions_per_day": config.mean_sessions_per_day,
        "seed": config.seed,
        "view_events": int(len(views)),
        "impression_rows": int(len(impressions)),
        "median_clicks_per_user": float(np.median(clicks_per_user)),
        "holdout_rows": int(holdout.sum()),
    }
    return Rows(
        user,
        article,
        subcategory,
        category,
        impressions.number[keep],
        shown_ms,
        clicked[keep],
        holdout,
        terms,
        params,
        stats,
    )


def _prefix_sums_before(key: np.ndarray, time_ms: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per row: the sum of `values` over rows with the same key shown strictly before the row."""
    order = np.lexsort((time_ms, key))
    keys, times, ordered = key[order], time_ms[order], values[order]
    running = np.cumsum(ordered, axis=0) - ordered
    index = np.arange(len(keys))
    group_start = np.maximum.accumulate(np.where(np.r_[True, keys[1:] != keys[:-1]], index, 0))
    tie = np.r_[True, (keys[1:] != keys[:-1]) | (times[1:] != times[:-1])]
    tie_start = np.maximum.accumulate(np.where(tie, index, 0))
    out = np.empty_like(ordered)
    out[order] = running[tie_start] - running[group_start]
    return out


def interest_posterior(
    rows: Rows, offset: np.ndarray, em_iterations: int = 150, online: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Empirical-Bayes posterior over the interest logit of each (user, subcategory).

    Likelihood: the user's impressions of the subcategory, clicked or not, with the other logit
    terms (`offset`) known: those before the holdout, and with `online` also the holdout's own
    impressions shown before the row (what a system updating its features as impressions come in
    knows; the recommender's affinity term does). Prior: one distribution per subcategory on the
    grid, fitted by EM over users on the training impressions (nonparametric maximum likelihood).

    Returns the posterior weights per holdout row (rows x grid) and the posterior mean per row
    (before the holdout).
    """
    n_users, n_sub = int(rows.user.max()) + 1, int(rows.subcategory.max()) + 1
    grid_size = len(INTEREST_GRID)
    train = np.flatnonzero(~rows.holdout)
    pair = rows.user * n_sub + rows.subcategory
    loglik = np.stack(
        [
            np.bincount(pair[train], weights=column, minlength=n_users * n_sub)
            for column in _row_loglik(rows, train, offset).T
        ],
        axis=1,
    ).reshape(n_users, n_sub, grid_size)
    log_prior = np.full((n_sub, grid_size), -np.log(grid_size))
    for _ in range(em_iterations):
        posterior = _normalised(loglik + log_prior[None])
        prior = posterior.mean(axis=0) + 1e-12
        log_prior = np.log(prior / prior.sum(axis=1, keepdims=True))
    log_posterior = (loglik + log_prior[None]).reshape(n_users * n_sub, grid_size)
    mean = (_normalised(log_posterior) @ INTEREST_GRID)[pair]
    held = np.flatnonzero(rows.holdout)
    at_holdout = log_posterior[pair[held]]
    if online:  # add the holdout impressions of the same pair shown before the row
        at_holdout = at_holdout + _prefix_sums_before(
            pair[held], rows.shown_ms[held], _row_loglik(rows, held, offset)
        )
    return _normalised(at_holdout), mean


def _row_loglik(rows: Rows, index: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Log-likelihood of each indexed row's outcome for every interest grid value (rows x grid)."""
    logits = INTEREST_GRID[None, :] + offset[index][:, None]
    return np.where(rows.clicked[index][:, None], _log_sigmoid(logits), _log_sigmoid(-logits))


def _normalised(log_weights: np.ndarray) -> np.ndarray:
    """Weights proportional to exp(log_weights) along the last axis, summing to 1."""
    weights = np.exp(log_weights - log_weights.max(axis=-1, keepdims=True))
    return weights / weights.sum(axis=-1, keepdims=True)


def quality_posterior(rows: Rows, logit_without_quality: np.ndarray, sd: float = 0.5) -> np.ndarray:
    """Per holdout row: posterior over the article's quality from its impressions shown before."""
    logits = QUALITY_GRID[None, :] + logit_without_quality[:, None]
    row_loglik = np.where(rows.clicked[:, None], _log_sigmoid(logits), _log_sigmoid(-logits))
    before = _prefix_sums_before(rows.article, rows.shown_ms, row_loglik)
    return _normalised(before[rows.holdout] - 0.5 * (QUALITY_GRID[None, :] / sd) ** 2)


def click_share_interest(
    rows: Rows, smoothing: float, interest_weight: float, category_weight: float
) -> np.ndarray:
    """Interest logit per row from smoothed shares of the user's training clicks (clicks only)."""
    n_users, n_sub = int(rows.user.max()) + 1, int(rows.subcategory.max()) + 1
    sub_category = np.zeros(n_sub, dtype=np.int64)
    sub_category[rows.subcategory] = rows.category
    n_cat = int(sub_category.max()) + 1
    clicks = ~rows.holdout & rows.clicked
    counts = np.zeros((n_users, n_sub))
    np.add.at(counts, (rows.user[clicks], rows.subcategory[clicks]), 1.0)
    overall = counts.sum(axis=0) / counts.sum()
    shares = (counts + smoothing * overall) / (counts.sum(axis=1, keepdims=True) + smoothing)
    category_shares = np.zeros((n_users, n_cat))
    for sub, cat in enumerate(sub_category):
        category_shares[:, cat] += shares[:, sub]
    relative = shares / shares.max(axis=1, keepdims=True)
    relative_category = category_shares / category_shares.max(axis=1, keepdims=True)
    return (
        interest_weight * relative[rows.user, rows.subcategory]
        + category_weight * relative_category[rows.user, rows.category]
    )


def measure(users: int, articles: int, days: float, sessions: float, seed: int, log=print) -> dict[str, Any]:
    """AUC and lift of the oracle, its ablations and the estimators on one simulated history."""
    log(f"ceiling: {users:,} users, {articles:,} articles, {days:g} days, {sessions:g} sessions/user/day")
    return measure_history(simulate(users, articles, days, sessions, seed), log)


def measure_history(history, log=print) -> dict[str, Any]:
    """`measure` on a history simulated elsewhere (the model benchmark's, in the same run)."""
    from newsrec_assets.domain.metrics import auc_lift, evaluate_impressions

    rows = history_rows(history)
    params = rows.params
    held = rows.holdout
    t = rows.terms
    results: dict[str, float] = {}

    def auc(name: str, scores: np.ndarray) -> None:
        results[name] = evaluate_impressions(rows.impression[held], rows.clicked[held], scores)["auc"]

    everything = sum(t.values())
    auc("oracle", everything[held])
    auc("oracle without position", (everything - t["position"])[held])
    auc("oracle without quality", (everything - t["quality"])[held])

    known_rest = t["bias"] + t["freshness"] + t["position"] + t["quality"]
    log("ceiling: interest from click shares")
    best_share = max(
        evaluate_impressions(
            rows.impression[held],
            rows.clicked[held],
            (click_share_interest(rows, s, params.interest_weight, params.category_weight) + known_rest)[
                held
            ],
        )["auc"]
        for s in SHARE_SMOOTHING
    )
    results["click-share interest + true rest"] = best_share
    log("ceiling: interest posterior from impressions (EM)")
    weights, _ = interest_posterior(rows, known_rest)
    auc(
        "interest posterior + true rest",
        (weights * _sigmoid(INTEREST_GRID[None, :] + known_rest[held][:, None])).sum(1),
    )

    # Nothing true but the model's form: freshness from the observable age, quality estimated.
    observable = t["bias"] + t["freshness"] + t["position"]
    log("ceiling: everything estimated")
    weights, mean_interest = interest_posterior(rows, observable)
    quality_weights = quality_posterior(rows, observable + mean_interest)
    online_weights, _ = interest_posterior(rows, observable, online=True)
    for name, interest, offset in (
        ("all estimated, with position", weights, observable[held]),
        ("all estimated, position-blind", weights, (observable - t["position"])[held]),
        (POSITION_BLIND_CEILING, online_weights, (observable - t["position"])[held]),
    ):
        grid = INTEREST_GRID[None, :, None] + QUALITY_GRID[None, None, :] + offset[:, None, None]
        auc(name, np.einsum("ig,iq,igq->i", interest, quality_weights, _sigmoid(grid)))

    oracle = results["oracle"]
    return {
        "stats": rows.stats,
        "auc": results,
        "lift": {name: auc_lift(value, oracle) for name, value in results.items()},
    }


def run(ctx):
    from bench.report import Figure, Outcome, markdown_table

    seed = int(ctx.option("ceiling.seed", 7))
    users = ctx.size(3000, 1000, "ceiling.users")
    articles = ctx.size(3000, 1000, "ceiling.articles")
    days = ctx.size(7.0, 3.0, "ceiling.days")
    variants = [float(s) for s in str(ctx.option("ceiling.sessions", "5.2,2.6")).split(",") if s]
    measured = [(s, measure(users, articles, days, s, seed, ctx.log)) for s in variants]

    figures = []
    for sessions, result in measured:
        label = f"{sessions:g} sessions/user/day" + (" (default demo)" if sessions == 5.2 else "")
        lift = result["lift"]
        figures += [
            Figure(f"{label}: oracle AUC", result["auc"]["oracle"], ""),
            Figure(f"{label}: lift of the oracle without position", lift["oracle without position"], "×"),
            Figure(
                f"{label}: lift of the position-blind ceiling (every term estimated)",
                lift[POSITION_BLIND_CEILING],
                "×",
                note="NAML is held to 0.95 of it by the model benchmark, on its own data in its run",
            ),
        ]
    names = list(measured[0][1]["auc"])
    table = markdown_table(
        ["estimate", *[f"{s:g} sessions: AUC / lift" for s, _ in measured]],
        [[name, *[f"{r['auc'][name]:.4f} / {r['lift'][name]:.3f}" for _, r in measured]] for name in names],
    )
    data = markdown_table(
        ["sessions/day", "users", "articles", "days", "view events", "median clicks/user", "holdout rows"],
        [
            [
                s,
                r["stats"]["users"],
                r["stats"]["articles"],
                r["stats"]["days"],
                r["stats"]["view_events"],
                r["stats"]["median_clicks_per_user"],
                r["stats"]["holdout_rows"],
            ]
            for s, r in measured
        ],
    )
    return Outcome(
        figures=figures,
        details={str(s): r for s, r in measured},
        tables=[("Data", data), ("AUC and lift over random relative to the oracle", table)],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--articles", type=int, default=3000)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--sessions", type=float, default=5.2)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    result = measure(
        args.users, args.articles, args.days, args.sessions, args.seed, lambda m: print(m, file=sys.stderr)
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
