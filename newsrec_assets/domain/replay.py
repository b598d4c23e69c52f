"""The freshness replay: what near-real-time is worth, measured in a closed loop on the simulated app.

The system exists to move recommendations from a daily batch to a 30-minute batch plus a
per-event speed layer plus a read-time merge of freshly published articles. This module measures
what each step buys. The simulated world (users with latent interests, the newsroom, the true
click model) continues from the end of its history; every policy serves the same users at the
same moments with the same new articles appearing, and the lists a policy serves decide what the
users click (the simulator's click model, with the same random draws for every policy: a
session's click on position p happens when its draw is below the click probability of whatever
the policy put there), except that nobody clicks an article they have already read: the click
model has no memory of reading (in the simulator's own feed repeats are rare), and without the
rule a list left unchanged all day would be read again at every session. Each policy learns only
from what it served itself: its impressions and clicks feed its popularity prior, its affinity
counts and its users' histories.

Policies (``POLICIES``):

- **daily batch at 04:00**, the old system's cadence: every list recomputed once a day;
- **30-minute batch**: every list recomputed every 30 minutes (the batch layer);
- **30-minute batch + speed layer**: a user's list is also recomputed after each of their clicks
  (within a replay step, as the speed layer's sensor batches one tick's events);
- **+ fresh-article merge at read time**: articles published since the last batch are scored
  against the stored user vector and merged into the list when it is read (the API), and the
  speed layer ranks them too (their vectors reach the store when they are published).

Lists are computed and served with the product's own code: ``recommend.encode_user_histories``,
``affinity.user_affinity``, ``recommend.candidate_priors``, ``recommend.ranking_vectors``,
``recommend.rank_for_users``, ``recommend.merge_history``, ``ranking.cold_start_list`` and
``ranking.merge_fresh_articles`` over the published model's numpy parameters, with the batch
layer's defaults (100 items stored, candidates published within 72 hours, already clicked
articles left out); a session shows the first 10 items, as the API's default.

Measured over whole days from the first 04:00 after the start (the hours before are a warm-up
that every policy gets): CTR, clicks per session, the median age of clicked articles, the share of
clicks on articles published the same day, and catalogue coverage (the share of the articles
available in the window, live and at most 72 hours old at some moment of it, that were shown at
least once). Numpy only; the caller supplies the news vectors of articles (existing and new).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from newsrec_assets.domain.affinity import counts_by_subcategory, load_affinity_params, user_affinity
from newsrec_assets.domain.popularity import load_prior_params
from newsrec_assets.domain.ranking import cold_start_list, merge_fresh_articles
from newsrec_assets.domain.recommend import (
    NO_ARTICLE,
    candidate_priors,
    encode_user_histories,
    rank_for_users,
    ranking_news_vectors,
    ranking_user_vectors,
    ranking_vectors,
)
from newsrec_assets.domain.simulator.click_model import ClickOracle
from newsrec_assets.domain.simulator.history import History
from newsrec_assets.domain.simulator.vocabulary import Taxonomy
from newsrec_assets.domain.simulator.world import (
    MS_PER_DAY,
    MS_PER_HOUR,
    MS_PER_MINUTE,
    PUBLISHING_BY_HOUR,
    READING_BY_HOUR,
    Articles,
    Newsroom,
    Users,
    sample_diurnal_times,
)
from newsrec_assets.domain.user_encoding import load_model_metadata, load_user_encoder_params

__all__ = [
    "POLICIES",
    "Policy",
    "ReplayModel",
    "ReplayResult",
    "ReplaySettings",
    "ReplayStart",
    "World",
    "replay",
    "start_from_history",
]


@dataclass(frozen=True)
class Policy:
    """When lists are recomputed, and whether new articles reach them between batches."""

    name: str
    batch_every_minutes: int | None = None  # None: once a day at daily_at_hour (UTC)
    daily_at_hour: int = 4
    speed_layer: bool = False
    fresh_merge: bool = False

    def batch_due(self, previous_ms: int | None, now_ms: int) -> bool:
        if previous_ms is None:
            return True
        if self.batch_every_minutes is not None:
            return now_ms - previous_ms >= self.batch_every_minutes * MS_PER_MINUTE
        last_slot = (now_ms - self.daily_at_hour * MS_PER_HOUR) // MS_PER_DAY
        return last_slot > (previous_ms - self.daily_at_hour * MS_PER_HOUR) // MS_PER_DAY


POLICIES = (
    Policy("daily batch at 04:00"),
    Policy("30-minute batch", batch_every_minutes=30),
    Policy("30-minute batch + speed layer", batch_every_minutes=30, speed_layer=True),
    Policy("+ fresh-article merge at read time", batch_every_minutes=30, speed_layer=True, fresh_merge=True),
)


@dataclass
class World:
    """The simulated world as its ground truth describes it (``simulator.ground_truth.load_world``)."""

    taxonomy: Taxonomy
    params: Any  # ClickModelParams
    users: Users
    articles: Articles


@dataclass
class ReplayStart:
    """What was observed before the replay starts, by world index (users, articles), times in epoch ms."""

    start_ms: int
    impression_users: np.ndarray
    impression_articles: np.ndarray
    impression_ms: np.ndarray
    impression_clicked: np.ndarray  # bool
    view_users: np.ndarray  # every view event (a user's history)
    view_articles: np.ndarray
    view_ms: np.ndarray


@dataclass
class ReplayModel:
    """The published model's serving parameters, and how its subcategory ids map the world's."""

    encoder_params: dict[str, np.ndarray]
    prior_params: dict[str, np.ndarray] | None
    affinity_params: dict[str, np.ndarray] | None
    n_subcategories: int  # the model's subcategory ids are 0..n-1 (0 = unknown)
    subcategory_categories: np.ndarray  # model subcategory id -> category id
    max_history: int = 50

    @classmethod
    def load(cls, folder: Path, subcategory_categories: np.ndarray) -> ReplayModel:
        """From a saved model folder (``training.save_model``), without torch."""
        config = load_model_metadata(folder)["naml_config"]
        return cls(
            encoder_params=load_user_encoder_params(folder),
            prior_params=load_prior_params(folder),
            affinity_params=load_affinity_params(folder),
            n_subcategories=int(config["n_subcategories"]),
            subcategory_categories=np.asarray(subcategory_categories, dtype=np.int64),
            max_history=int(config["max_history"]),
        )


def start_from_history(history: History) -> tuple[World, ReplayStart]:
    """The world and what was observed, from a simulated history in memory (benchmarks, tests)."""
    impressions, views = history.impressions, history.views
    n = history.articles.count
    from_list = views.impression_number >= 0
    clicked = np.isin(
        impressions.number * n + impressions.article,
        views.impression_number[from_list] * n + views.article[from_list],
    )
    world = World(history.taxonomy, history.params, history.users, history.articles)
    start = ReplayStart(
        history.config.end_ms,
        impressions.user,
        impressions.article,
        impressions.shown_ms,
        clicked,
        views.user,
        views.article,
        views.viewed_ms,
    )
    return world, start


# (article rows as the CMS writes them) -> (news vectors [n, d], model subcategory ids [n])
EncodeArticles = Callable[[list[dict[str, Any]]], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class ReplaySettings:
    days: float = 2.0  # measured days, after the warm-up up to the first 04:00
    seed: int = 0
    step_minutes: int = 5
    stored_items: int = 100  # the batch layer's list length
    shown_items: int = 10  # what a session shows (the API's default k)
    candidate_max_age_hours: float = 72.0
    cold_start_half_life_hours: float = 6.0
    measure_from_hour: int = 4


@dataclass
class PolicyOutcome:
    metrics: dict[str, float]
    hourly_ctr: list[float]  # CTR per measured hour
    batches: int
    speed_updates: int


@dataclass
class ReplayResult:
    policies: dict[str, PolicyOutcome]
    measure_start_ms: int
    measure_end_ms: int
    sessions: int  # measured sessions (every policy serves the same ones)
    new_articles: int  # published during the replay, warm-up included
    settings: ReplaySettings

    def table(self) -> dict[str, dict[str, float]]:
        return {name: outcome.metrics for name, outcome in self.policies.items()}


@dataclass
class _Plan:
    """What happens in the world whatever the policy: sessions, their draws, new articles."""

    session_users: np.ndarray
    session_ms: np.ndarray
    draws: np.ndarray  # sessions, shown_items: uniform draws deciding the clicks
    articles: Articles  # existing and new
    news_vectors: np.ndarray  # every article
    subcategory_ids: np.ndarray  # every article, the model's ids
    fresh_vectors: np.ndarray  # every article in ranking form as just published (the fresh-article sensor's)
    by_publication: np.ndarray  # article indices in publication order
    n_existing: int
    oracle: ClickOracle
    end_ms: int
    measure_start_ms: int


def replay(
    world: World,
    start: ReplayStart,
    model: ReplayModel,
    existing_vectors: tuple[np.ndarray, np.ndarray],
    encode_articles: EncodeArticles,
    settings: ReplaySettings | None = None,
    policies: Sequence[Policy] = POLICIES,
    log: Callable[[str], None] = lambda message: None,
) -> ReplayResult:
    """Run every policy over the same continuation of the world and measure what users clicked.

    Args:
        world: the simulated world at the start (``Articles`` of the history, users, click model).
        start: what was observed before (impressions, clicks, views), by world index.
        model: the published model's serving parameters.
        existing_vectors: news vectors [n_articles, d] and model subcategory ids of the world's
            articles (articles without vectors, e.g. deleted ones, may hold anything: they are
            never candidates once removed).
        encode_articles: news vectors and subcategory ids of newly published articles' rows.
    """
    settings = settings or ReplaySettings()
    plan = _plan(world, start, model, existing_vectors, encode_articles, settings, log)
    outcomes = {}
    for policy in policies:
        log(f"replay: {policy.name}")
        outcomes[policy.name] = _run(policy, plan, start, model, settings)
    measured = int((plan.session_ms >= plan.measure_start_ms).sum())
    return ReplayResult(
        outcomes,
        plan.measure_start_ms,
        plan.end_ms,
        measured,
        plan.articles.count - plan.n_existing,
        settings,
    )


def _plan(
    world: World,
    start: ReplayStart,
    model: ReplayModel,
    existing_vectors: tuple[np.ndarray, np.ndarray],
    encode_articles: EncodeArticles,
    settings: ReplaySettings,
    log: Callable[[str], None],
) -> _Plan:
    rng = np.random.default_rng([settings.seed, start.start_ms % (2**32)])
    first_day = (start.start_ms - settings.measure_from_hour * MS_PER_HOUR) // MS_PER_DAY + 1
    measure_start = first_day * MS_PER_DAY + settings.measure_from_hour * MS_PER_HOUR
    end = measure_start + int(round(settings.days * MS_PER_DAY))
    span_days = (end - start.start_ms) / MS_PER_DAY

    users = world.users
    counts = rng.poisson(users.sessions_per_day * span_days)
    session_users = np.repeat(np.arange(users.count), counts)
    session_ms = sample_diurnal_times(rng, len(session_users), start.start_ms, end, READING_BY_HOUR)
    order = np.lexsort((session_users, session_ms))
    session_users, session_ms = session_users[order], session_ms[order]
    draws = rng.random((len(session_users), settings.shown_items))

    # The newsroom keeps its pace and topic mix; new articles never leave during the replay.
    articles = Articles(
        world.articles.subcategory.copy(),
        world.articles.quality.copy(),
        world.articles.published_ms.copy(),
        world.articles.removed_ms.copy(),
    )
    n_existing = articles.count
    history_days = max((start.start_ms - int(articles.published_ms.min())) / MS_PER_DAY, 1.0)
    topic_share = np.bincount(articles.subcategory, minlength=world.taxonomy.n_subcategories) + 1.0
    newsroom = Newsroom(rng, world.taxonomy, world.params.quality_sd, topic_share / topic_share.sum())
    n_new = int(rng.poisson(n_existing / history_days * span_days))
    rows = []
    for published_ms in np.sort(sample_diurnal_times(rng, n_new, start.start_ms, end, PUBLISHING_BY_HOUR)):
        subcategory = newsroom.draw_subcategory()
        index = articles.append(subcategory, newsroom.draw_quality(), int(published_ms))
        rows.append(newsroom.new_row(index, subcategory, int(published_ms)))
    log(f"replay: {len(session_users):,} sessions, {n_new:,} new articles to encode")
    vectors, subcategory_ids = existing_vectors
    if rows:
        new_vectors, new_ids = encode_articles(rows)
        vectors = np.vstack([vectors, new_vectors]).astype(np.float32)
        subcategory_ids = np.concatenate([subcategory_ids, new_ids])
    oracle = ClickOracle(
        world.params,
        users.interest,
        world.taxonomy.subcategory_category,
        articles.subcategory,
        articles.quality,
        articles.published_ms,
    )
    vectors = np.asarray(vectors, dtype=np.float32)
    subcategory_ids = np.asarray(subcategory_ids, dtype=np.int64)
    # A just-published article has no impressions or clicks and is 0 hours old.
    zeros = np.zeros(articles.count)
    fresh_vectors = ranking_news_vectors(
        vectors,
        candidate_priors(model.prior_params, zeros, zeros, zeros),
        subcategory_ids,
        0 if model.affinity_params is None else model.n_subcategories,
    )
    return _Plan(
        session_users,
        session_ms,
        draws,
        articles,
        vectors,
        subcategory_ids,
        fresh_vectors,
        np.argsort(articles.published_ms, kind="stable"),
        n_existing,
        oracle,
        end,
        measure_start,
    )


@dataclass
class _Counters:
    """What a policy has observed so far: the inputs of its features."""

    article_impressions: np.ndarray  # articles
    article_clicks: np.ndarray  # articles
    user_impressions: np.ndarray  # users, model subcategories
    user_clicks: np.ndarray  # users, model subcategories
    histories: list[list[int]]  # per user: distinct clicked articles, newest last
    read: np.ndarray  # users, articles: read already (never clicked again)
    click_articles: list[np.ndarray] = field(default_factory=list)  # for the cold-start popularity
    click_ms: list[np.ndarray] = field(default_factory=list)

    @classmethod
    def observed(cls, start: ReplayStart, plan: _Plan, n_users: int, n_subcategories: int) -> _Counters:
        n_articles = plan.articles.count
        subcategory = plan.subcategory_ids
        shown, clicked = start.impression_articles, start.impression_clicked.astype(bool)
        counters = cls(
            article_impressions=np.bincount(shown, minlength=n_articles).astype(np.float64),
            article_clicks=np.bincount(shown[clicked], minlength=n_articles).astype(np.float64),
            user_impressions=np.zeros((n_users, n_subcategories)),
            user_clicks=np.zeros((n_users, n_subcategories)),
            histories=[[] for _ in range(n_users)],
            read=np.zeros((n_users, n_articles), dtype=bool),
        )
        np.add.at(counters.user_impressions, (start.impression_users, subcategory[shown]), 1.0)
        np.add.at(counters.user_clicks, (start.impression_users[clicked], subcategory[shown[clicked]]), 1.0)
        for index in np.argsort(start.view_ms, kind="stable").tolist():
            counters.clicked(int(start.view_users[index]), int(start.view_articles[index]))
        counters.click_articles.append(np.asarray(shown[clicked], dtype=np.int64))
        counters.click_ms.append(np.asarray(start.impression_ms[clicked], dtype=np.int64))
        return counters

    def clicked(self, user: int, article: int) -> None:
        self.read[user, article] = True
        history = self.histories[user]
        if article in history:
            history.remove(article)
        history.append(article)
        if len(history) > 64:
            del history[0]

    def history_rows(self, users: Sequence[int], max_history: int) -> np.ndarray:
        """Padded history rows, newest first (the batch layer's layout)."""
        rows = np.full((len(users), max_history), NO_ARTICLE, dtype=np.int32)
        for i, user in enumerate(users):
            newest_first = self.histories[user][::-1][:max_history]
            rows[i, : len(newest_first)] = newest_first
        return rows


@dataclass
class _Lists:
    """The online store of one policy: each user's ranked list with its user vector."""

    ids: dict[int, np.ndarray] = field(default_factory=dict)
    scores: dict[int, np.ndarray] = field(default_factory=dict)
    vectors: dict[int, np.ndarray] = field(default_factory=dict)
    computed_ms: dict[int, int] = field(default_factory=dict)
    cold_start: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


@dataclass
class _Batch:
    """The batch layer's snapshot, which the speed layer ranks from until the next batch."""

    computed_ms: int
    candidate_rows: np.ndarray
    candidate_vectors: np.ndarray  # ranking form
    affinity: np.ndarray | None  # users, subcategories


def _run(policy: Policy, plan: _Plan, start: ReplayStart, model: ReplayModel, settings: ReplaySettings):
    n_users = plan.oracle.n_users
    counters = _Counters.observed(start, plan, n_users, model.n_subcategories)
    lists = _Lists()
    articles = plan.articles
    step = settings.step_minutes * MS_PER_MINUTE
    bounds = np.searchsorted(plan.session_ms, np.arange(start.start_ms, plan.end_ms + step, step))
    previous_batch: int | None = None
    batch: _Batch | None = None
    batches = speed_updates = 0
    measured = {"impressions": 0, "clicks": 0, "sessions": 0}
    clicked_age_h: list[np.ndarray] = []
    same_day: list[np.ndarray] = []
    shown_articles: set[int] = set()
    hours = int(round((plan.end_ms - plan.measure_start_ms) / MS_PER_HOUR))
    hourly = np.zeros((hours, 2))  # impressions, clicks
    positions = np.arange(settings.shown_items)

    for step_index, step_start in enumerate(range(start.start_ms, plan.end_ms, step)):
        if policy.batch_due(previous_batch, step_start):
            batch = _batch(step_start, counters, lists, plan, model, settings, n_users)
            previous_batch = step_start
            batches += 1
        sessions = slice(bounds[step_index], bounds[step_index + 1])
        users, moments = plan.session_users[sessions], plan.session_ms[sessions]
        if len(users) == 0:
            continue
        shown = np.stack(
            [
                _serve(int(u), int(t), lists, plan, policy, settings)
                for u, t in zip(users, moments, strict=True)
            ]
        )  # sessions, shown_items
        probability = plan.oracle.probability_by_index(
            users[:, None], shown, moments[:, None], positions[None, :]
        )
        clicks = (plan.draws[sessions] < probability) & ~counters.read[users[:, None], shown]
        _read_once_within_the_step(users, shown, clicks)
        _observe(counters, users, moments, shown, clicks, plan)

        measuring = moments >= plan.measure_start_ms
        if measuring.any():
            m_shown, m_clicks, m_times = shown[measuring], clicks[measuring], moments[measuring]
            measured["sessions"] += int(measuring.sum())
            measured["impressions"] += m_shown.size
            measured["clicks"] += int(m_clicks.sum())
            shown_articles.update(np.unique(m_shown).tolist())
            click_times = np.broadcast_to(m_times[:, None], m_shown.shape)[m_clicks]
            click_articles = m_shown[m_clicks]
            clicked_age_h.append((click_times - articles.published_ms[click_articles]) / MS_PER_HOUR)
            same_day.append(click_times // MS_PER_DAY == articles.published_ms[click_articles] // MS_PER_DAY)
            hour = np.minimum((m_times - plan.measure_start_ms) // MS_PER_HOUR, hours - 1)
            np.add.at(hourly[:, 0], hour, settings.shown_items)
            np.add.at(hourly[:, 1], hour, m_clicks.sum(axis=1))

        if policy.speed_layer and batch is not None:
            clickers = np.unique(users[clicks.any(axis=1)])
            if len(clickers):
                _speed(clickers, step_start + step, batch, counters, lists, plan, model, policy, settings)
                speed_updates += len(clickers)

    available = np.flatnonzero(
        (articles.published_ms < plan.end_ms)
        & (articles.published_ms >= plan.measure_start_ms - settings.candidate_max_age_hours * MS_PER_HOUR)
        & (articles.removed_ms > plan.measure_start_ms)
    )
    ages = np.concatenate(clicked_age_h) if clicked_age_h else np.zeros(0)
    metrics = {
        "ctr": measured["clicks"] / max(measured["impressions"], 1),
        "clicks_per_session": measured["clicks"] / max(measured["sessions"], 1),
        "median_clicked_age_hours": float(np.median(ages)) if len(ages) else float("nan"),
        "clicks_on_same_day_articles": float(np.concatenate(same_day).mean()) if same_day else float("nan"),
        "catalogue_coverage": len(shown_articles & set(available.tolist())) / max(len(available), 1),
    }
    hourly_ctr = (hourly[:, 1] / np.maximum(hourly[:, 0], 1)).tolist()
    return PolicyOutcome(metrics, hourly_ctr, batches, speed_updates)


def _live_candidates(now_ms: int, plan: _Plan, settings: ReplaySettings) -> np.ndarray:
    articles = plan.articles
    published = articles.published_ms
    return np.flatnonzero(
        (published <= now_ms)
        & (published >= now_ms - settings.candidate_max_age_hours * MS_PER_HOUR)
        & (articles.removed_ms > now_ms)
    )


def _batch(
    now_ms: int,
    counters: _Counters,
    lists: _Lists,
    plan: _Plan,
    model: ReplayModel,
    settings: ReplaySettings,
    n_users: int,
) -> _Batch:
    """The batch layer at `now_ms`: every user with a history gets a new list; a new cold-start list."""
    candidates = _live_candidates(now_ms, plan, settings)
    age_hours = (now_ms - plan.articles.published_ms[candidates]) / MS_PER_HOUR
    priors = candidate_priors(
        model.prior_params,
        age_hours,
        counters.article_clicks[candidates],
        counters.article_impressions[candidates],
    )
    affinity = None
    if model.affinity_params is not None:
        raw = counts_by_subcategory(
            counters.user_impressions, counters.user_clicks, model.subcategory_categories
        )
        affinity = user_affinity(model.affinity_params, raw)
    users = [u for u in range(n_users) if counters.histories[u]]
    history_rows = counters.history_rows(users, model.max_history)
    user_vectors = encode_user_histories(model.encoder_params, plan.news_vectors, history_rows)
    ranking_users, ranking_candidates = ranking_vectors(
        user_vectors,
        plan.news_vectors[candidates],
        priors,
        None if affinity is None else affinity[users],
        plan.subcategory_ids[candidates],
    )
    _store(users, ranking_users, ranking_candidates, history_rows, candidates, now_ms, lists, settings)

    clicks = np.concatenate(counters.click_articles)
    recent = np.concatenate(counters.click_ms) >= now_ms - 24 * MS_PER_HOUR
    popularity = np.bincount(clicks[recent], minlength=plan.articles.count)[candidates]
    lists.cold_start, _ = cold_start_list(
        candidates,
        plan.articles.published_ms[candidates] / 1000.0,
        popularity,
        now_ms / 1000.0,
        settings.stored_items,
        freshness_half_life_hours=settings.cold_start_half_life_hours,
    )
    return _Batch(now_ms, candidates, ranking_candidates, affinity)


def _store(
    users: list[int],
    ranking_users: np.ndarray,
    ranking_candidates: np.ndarray,
    history_rows: np.ndarray,
    candidates: np.ndarray,
    now_ms: int,
    lists: _Lists,
    settings: ReplaySettings,
) -> None:
    """Top items of every user among the candidates, already clicked ones left out, into the store."""
    top_index, top_scores = rank_for_users(
        ranking_users, ranking_candidates, history_rows, candidates, settings.stored_items
    )
    for i, user in enumerate(users):
        finite = np.isfinite(top_scores[i])
        lists.ids[user] = candidates[top_index[i][finite]]
        lists.scores[user] = top_scores[i][finite]
        lists.vectors[user] = ranking_users[i]
        lists.computed_ms[user] = now_ms


def _fresh_articles(since_ms: int, now_ms: int, plan: _Plan) -> tuple[np.ndarray, np.ndarray]:
    """Live articles published in (since, now], with their vectors as the fresh-article sensor
    stores them (ranking form, the prior of a just-published article)."""
    published = plan.articles.published_ms[plan.by_publication]
    window = plan.by_publication[
        np.searchsorted(published, since_ms, side="right") : np.searchsorted(published, now_ms, side="right")
    ]
    fresh = window[plan.articles.removed_ms[window] > now_ms]
    return fresh, plan.fresh_vectors[fresh]


def _serve(
    user: int, now_ms: int, lists: _Lists, plan: _Plan, policy: Policy, settings: ReplaySettings
) -> np.ndarray:
    """The articles a session shows: the stored list (fresh articles merged in), or the cold-start list."""
    k = settings.shown_items
    ids = lists.ids.get(user)
    if ids is None:
        items = lists.cold_start[:k]
    elif policy.fresh_merge:
        fresh, vectors = _fresh_articles(lists.computed_ms[user], now_ms, plan)
        merged = merge_fresh_articles(ids, lists.scores[user], lists.vectors[user], fresh, vectors)
        items = np.fromiter((article for article, _, _ in islice(merged, k)), dtype=np.int64)
    else:
        items = ids[:k]
    if len(items) < k:  # a short list: top up from the cold-start list, as no session shows fewer
        extra = [a for a in lists.cold_start.tolist() if a not in set(items.tolist())]
        items = np.concatenate([items, np.asarray(extra[: k - len(items)], dtype=np.int64)])
    return items


def _read_once_within_the_step(users: np.ndarray, shown: np.ndarray, clicks: np.ndarray) -> None:
    """A user with two sessions in one step does not click in the later what the earlier read."""
    if len(np.unique(users)) == len(users):
        return
    read: dict[int, set[int]] = {}
    for session, user in enumerate(users.tolist()):
        earlier = read.setdefault(user, set())
        for position in np.flatnonzero(clicks[session]).tolist():
            article = int(shown[session, position])
            clicks[session, position] = article not in earlier
            earlier.add(article)


def _observe(counters: _Counters, users, moments, shown, clicks, plan: _Plan) -> None:
    """Impressions and clicks of one step become the policy's observations."""
    subcategory = plan.subcategory_ids[shown]  # sessions, k
    session_users = np.broadcast_to(users[:, None], shown.shape)
    np.add.at(counters.article_impressions, shown.ravel(), 1.0)
    np.add.at(counters.article_clicks, shown[clicks], 1.0)
    np.add.at(counters.user_impressions, (session_users.ravel(), subcategory.ravel()), 1.0)
    np.add.at(counters.user_clicks, (session_users[clicks], subcategory[clicks]), 1.0)
    session, position = np.nonzero(clicks)
    for s, p in zip(session.tolist(), position.tolist(), strict=True):  # list order: top first
        counters.clicked(int(users[s]), int(shown[s, p]))
    counters.click_articles.append(shown[clicks].astype(np.int64))
    counters.click_ms.append(np.broadcast_to(moments[:, None], shown.shape)[clicks].astype(np.int64))


def _speed(clickers, now_ms, batch: _Batch, counters, lists, plan, model, policy, settings) -> None:
    """The speed layer: the clickers' lists from their new histories, with the batch's priors and affinity."""
    users = clickers.tolist()
    history_rows = counters.history_rows(users, model.max_history)
    user_vectors = encode_user_histories(model.encoder_params, plan.news_vectors, history_rows)
    ranking_users = ranking_user_vectors(
        user_vectors, None if batch.affinity is None else batch.affinity[clickers]
    )
    candidates, candidate_vectors = batch.candidate_rows, batch.candidate_vectors
    if policy.fresh_merge:
        fresh, fresh_vectors = _fresh_articles(batch.computed_ms, now_ms, plan)
        candidates = np.concatenate([candidates, fresh])
        candidate_vectors = np.vstack([candidate_vectors, fresh_vectors])
    _store(users, ranking_users, candidate_vectors, history_rows, candidates, now_ms, lists, settings)
