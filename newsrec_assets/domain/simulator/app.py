"""The news app's behaviour in a session: the list it shows and what the user does with it.

The app's feed is the pre-existing, non-personal-ish one that the recommender is meant to replace:
a mix of fresh articles, popular articles, articles from subcategories the user clicked before
(published before today, like a daily batch recommender would produce) and random recent ones.
The user then clicks through the true click model and sometimes re-opens an article read
earlier (a view without an impression), which is what makes in-place row updates common.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TypeVar

import numpy as np

from newsrec_assets.domain.simulator.click_model import ClickOracle
from newsrec_assets.domain.simulator.world import MS_PER_DAY, MS_PER_HOUR, Articles

LIST_SIZE = 10
FRESH_SLOTS = 3
POPULAR_SLOTS = 3
FAMILIAR_SLOTS = 2
RANDOM_CANDIDATES = 14  # more than the remaining slots, so duplicates rarely leave a list short
FRESH_WINDOW_MS = 6 * MS_PER_HOUR
RECENT_WINDOW_MS = 3 * MS_PER_DAY
POPULAR_POOL = 30
POPULARITY_HALF_LIFE_MS = 6 * MS_PER_HOUR
RECENT_VIEWS_KEPT = 8
RETURN_PROBABILITY = 0.15
MEAN_READING_SECONDS = 40.0
MEAN_SCAN_SECONDS = 4.0

T = TypeVar("T", "Impressions", "Views")


@dataclass
class AppState:
    """What the app remembers between sessions; it shapes the next lists."""

    popularity: np.ndarray  # articles: views, decayed with POPULARITY_HALF_LIFE_MS
    popularity_ms: int  # time the decay was last applied
    clicked_subcategories: np.ndarray  # users, subcategories: clicks so far
    recent_views: np.ndarray  # users, RECENT_VIEWS_KEPT: article indices (-1 = empty), a ring buffer
    recent_cursor: np.ndarray  # users: next ring slot to overwrite
    next_impression_number: int = 1

    @classmethod
    def empty(cls, n_users: int, n_articles: int, n_subcategories: int, now_ms: int) -> AppState:
        return cls(
            popularity=np.zeros(n_articles),
            popularity_ms=now_ms,
            clicked_subcategories=np.zeros((n_users, n_subcategories), dtype=np.float32),
            recent_views=np.full((n_users, RECENT_VIEWS_KEPT), -1, dtype=np.int64),
            recent_cursor=np.zeros(n_users, dtype=np.int64),
        )

    def add_article(self) -> None:
        self.popularity = np.append(self.popularity, 0.0)


@dataclass
class Impressions:
    """Rows of the `impressions` table: one per shown article."""

    number: np.ndarray  # impression number (one per session's list)
    user: np.ndarray
    article: np.ndarray
    position: np.ndarray
    shown_ms: np.ndarray

    def __len__(self) -> int:
        return len(self.number)


@dataclass
class Views:
    """View events (each becomes an INSERT or UPDATE of a `user_article_views` row)."""

    user: np.ndarray
    article: np.ndarray
    viewed_ms: np.ndarray
    impression_number: np.ndarray  # -1: not from a list (the user re-opened the article)

    def __len__(self) -> int:
        return len(self.user)

    def select(self, mask: np.ndarray) -> Views:
        return Views(self.user[mask], self.article[mask], self.viewed_ms[mask], self.impression_number[mask])


@dataclass
class SessionOutcome:
    impressions: Impressions
    views: Views
    sessions: int  # sessions served (none while the catalogue has fewer than LIST_SIZE articles)


def _concat(kind: type[T], parts: list[T]) -> T:
    """Column-wise concatenation of row batches; an empty list gives empty int columns."""
    empty = np.zeros(0, dtype=np.int64)
    return kind(
        **{f.name: np.concatenate([empty, *(getattr(p, f.name) for p in parts)]) for f in fields(kind)}
    )


def concat_impressions(parts: list[Impressions]) -> Impressions:
    return _concat(Impressions, parts)


def concat_views(parts: list[Views]) -> Views:
    return _concat(Views, parts)


class NewsApp:
    """Serves lists to sessions and draws the users' responses."""

    def __init__(self, articles: Articles, oracle: ClickOracle, state: AppState) -> None:
        self.articles = articles
        self.oracle = oracle
        self.state = state

    def serve(
        self,
        rng: np.random.Generator,
        session_users: np.ndarray,
        session_ms: np.ndarray,
        catalogue_ms: int,
        until_ms: int,
        horizon_ms: int | None = None,
    ) -> SessionOutcome:
        """Serve sessions that start in [catalogue_ms, until_ms), in time order.

        Lists come from the catalogue as of `catalogue_ms`, without articles removed before
        `until_ms`. Views at or after `horizon_ms` (the end of a simulated history) are dropped.
        """
        articles = self.articles
        live = np.flatnonzero(articles.live_mask(catalogue_ms, until_ms))
        if len(live) < LIST_SIZE or len(session_users) == 0:
            self._decay_popularity(until_ms)
            return SessionOutcome(concat_impressions([]), concat_views([]), 0)

        lists = self._choose_lists(rng, session_users, catalogue_ms, live)
        n_sessions = len(session_users)
        positions = np.arange(LIST_SIZE)
        numbers = self.state.next_impression_number + np.arange(n_sessions, dtype=np.int64)
        self.state.next_impression_number += n_sessions
        impressions = Impressions(
            number=np.repeat(numbers, LIST_SIZE),
            user=np.repeat(session_users, LIST_SIZE),
            article=lists.ravel(),
            position=np.tile(positions, n_sessions),
            shown_ms=np.repeat(session_ms, LIST_SIZE),
        )

        probability = self.oracle.probability_by_index(
            session_users[:, None], lists, session_ms[:, None], positions[None, :]
        )
        clicked = rng.random(probability.shape) < probability
        # Users scan the list for a few seconds, then go down it, reading each clicked article
        # before clicking the next one.
        scan_ms = (1_000 + rng.exponential(MEAN_SCAN_SECONDS * 1000, size=n_sessions)).astype(np.int64)
        reading_ms = 5_000 + rng.exponential(MEAN_READING_SECONDS * 1000, size=clicked.shape).astype(np.int64)
        reading_ms = np.where(clicked, reading_ms, 0)
        read_before = np.cumsum(reading_ms, axis=1) - reading_ms
        session_row, list_position = np.nonzero(clicked)
        click_views = Views(
            user=session_users[session_row],
            article=lists[session_row, list_position],
            viewed_ms=session_ms[session_row]
            + scan_ms[session_row]
            + read_before[session_row, list_position],
            impression_number=numbers[session_row],
        )
        session_end_ms = session_ms + scan_ms + reading_ms.sum(axis=1)
        return_views = self._return_visits(rng, session_users, session_end_ms)

        views = concat_views([click_views, return_views])
        order = np.argsort(views.viewed_ms, kind="stable")
        views = views.select(order)
        # Nobody reads an article after it was taken down, or after the simulated horizon.
        visible = views.viewed_ms < articles.removed_ms[views.article]
        if horizon_ms is not None:
            visible &= views.viewed_ms < horizon_ms
        views = views.select(visible)

        self._remember(views, until_ms)
        return SessionOutcome(impressions=impressions, views=views, sessions=n_sessions)

    def _choose_lists(
        self, rng: np.random.Generator, session_users: np.ndarray, now_ms: int, live: np.ndarray
    ) -> np.ndarray:
        """One list of LIST_SIZE distinct live articles per session, in random order."""
        articles = self.articles
        n_sessions = len(session_users)
        published = articles.published_ms[live]
        fresh = live[published >= now_ms - FRESH_WINDOW_MS]
        recent = live[published >= now_ms - RECENT_WINDOW_MS]
        if len(recent) < 2 * LIST_SIZE:
            recent = live

        candidates = [
            self._uniform_picks(rng, fresh, (n_sessions, FRESH_SLOTS)),
            self._popular_picks(rng, live, (n_sessions, POPULAR_SLOTS)),
            self._familiar_picks(rng, session_users, live, now_ms),
            self._uniform_picks(rng, recent, (n_sessions, RANDOM_CANDIDATES)),
        ]
        candidate_rows = np.hstack(candidates)
        lists = np.empty((n_sessions, LIST_SIZE), dtype=np.int64)
        for row, candidate_row in enumerate(candidate_rows.tolist()):
            chosen = list(dict.fromkeys(article for article in candidate_row if article >= 0))[:LIST_SIZE]
            if len(chosen) < LIST_SIZE:
                taken = set(chosen)
                chosen += [int(a) for a in rng.permutation(live) if a not in taken][: LIST_SIZE - len(chosen)]
            lists[row] = chosen
        # Slot order is shuffled so that position effects are not confounded with the slot type.
        return rng.permuted(lists, axis=1)

    @staticmethod
    def _uniform_picks(rng: np.random.Generator, pool: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        if len(pool) == 0:
            return np.full(shape, -1, dtype=np.int64)
        return pool[rng.integers(len(pool), size=shape)]

    def _popular_picks(
        self, rng: np.random.Generator, live: np.ndarray, shape: tuple[int, int]
    ) -> np.ndarray:
        popularity = self.state.popularity[live]
        if not (popularity > 0).any():
            return np.full(shape, -1, dtype=np.int64)
        top = np.argsort(-popularity, kind="stable")[:POPULAR_POOL]
        top = top[popularity[top] > 0]
        cumulative = np.cumsum(popularity[top])
        picks = np.searchsorted(cumulative, rng.random(shape) * cumulative[-1], side="right")
        return live[top[np.minimum(picks, len(top) - 1)]]

    def _familiar_picks(
        self, rng: np.random.Generator, session_users: np.ndarray, live: np.ndarray, now_ms: int
    ) -> np.ndarray:
        """Articles from subcategories the user clicked, published before today (a daily batch's view)."""
        articles = self.articles
        shape = (len(session_users), FAMILIAR_SLOTS)
        start_of_today = now_ms // MS_PER_DAY * MS_PER_DAY
        published = articles.published_ms[live]
        pool = live[(published < start_of_today) & (published >= now_ms - RECENT_WINDOW_MS)]
        if len(pool) == 0:
            return np.full(shape, -1, dtype=np.int64)
        pool = pool[np.argsort(articles.subcategory[pool], kind="stable")]
        n_subcategories = self.state.clicked_subcategories.shape[1]
        pool_size = np.bincount(articles.subcategory[pool], minlength=n_subcategories)
        pool_start = np.cumsum(pool_size) - pool_size

        clicks = self.state.clicked_subcategories[session_users].astype(np.float64)
        cumulative = np.cumsum(clicks, axis=1)
        total = cumulative[:, -1]
        draws = rng.random(shape) * total[:, None]
        subcategory = np.minimum(
            (cumulative[:, None, :] <= draws[:, :, None]).sum(axis=2), n_subcategories - 1
        )
        size = pool_size[subcategory]
        picks = pool[
            np.minimum(
                pool_start[subcategory] + np.floor(rng.random(shape) * size).astype(np.int64), len(pool) - 1
            )
        ]
        return np.where((total[:, None] > 0) & (size > 0), picks, -1)

    def _return_visits(
        self, rng: np.random.Generator, session_users: np.ndarray, session_end_ms: np.ndarray
    ) -> Views:
        """After some sessions the user re-opens an article they read recently (from history or a link)."""
        remembered = self.state.recent_views[session_users]
        has_memory = (remembered >= 0).any(axis=1)
        returning = np.flatnonzero(has_memory & (rng.random(len(session_users)) < RETURN_PROBABILITY))
        slot_scores = rng.random((len(returning), RECENT_VIEWS_KEPT)) * (remembered[returning] >= 0)
        article = remembered[returning, np.argmax(slot_scores, axis=1)]
        delay_ms = (10_000 + rng.exponential(60_000, size=len(returning))).astype(np.int64)
        return Views(
            user=session_users[returning],
            article=article,
            viewed_ms=session_end_ms[returning] + delay_ms,
            impression_number=np.full(len(returning), -1, dtype=np.int64),
        )

    def _decay_popularity(self, now_ms: int) -> None:
        elapsed = now_ms - self.state.popularity_ms
        if elapsed > 0:
            self.state.popularity *= 0.5 ** (elapsed / POPULARITY_HALF_LIFE_MS)
            self.state.popularity_ms = now_ms

    def _remember(self, views: Views, now_ms: int) -> None:
        state = self.state
        self._decay_popularity(now_ms)
        np.add.at(state.popularity, views.article, 1.0)
        from_lists = views.impression_number >= 0
        np.add.at(
            state.clicked_subcategories,
            (views.user[from_lists], self.articles.subcategory[views.article[from_lists]]),
            1.0,
        )
        for user, article in zip(views.user.tolist(), views.article.tolist(), strict=True):
            if article in state.recent_views[user]:
                continue
            state.recent_views[user, state.recent_cursor[user]] = article
            state.recent_cursor[user] = (state.recent_cursor[user] + 1) % RECENT_VIEWS_KEPT
