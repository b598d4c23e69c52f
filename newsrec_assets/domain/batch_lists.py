"""The batch layer's list rules around the model's ranking (numpy only).

- **Seen filtering.** An article served to a user at least `min_impressions` times without a
  click is dropped from the user's list or demoted (its score lowered by `demotion`), as
  configured; every article the user ever clicked stays excluded, not only the latest 50 clicks
  that the user encoder reads.
- **The fallback ranker.** Until a model has passed the gate, and to fill a model's list that is
  short of k (few candidates in the window), lists come from the popularity/recency ranker
  (`ranking.cold_start_list` scores: popularity and an exponential freshness decay, in the data's
  event time) over every live article, with the same exclusions. Its lists carry
  `POPULARITY_VERSION` as their model version, so provenance says which ranker made them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from newsrec_assets.domain.ranking import top_k_scores

POPULARITY_VERSION = "popularity-recency"

__all__ = [
    "POPULARITY_VERSION",
    "SeenPolicy",
    "UserExclusions",
    "fill_short_lists",
    "popularity_lists",
    "user_exclusions",
]

Csr = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class SeenPolicy:
    """What happens to articles served at least `min_impressions` times without a click."""

    min_impressions: int = 3
    action: Literal["drop", "demote"] = "drop"
    demotion: float = 1.0  # subtracted from the score when demoting

    def __post_init__(self) -> None:
        if self.min_impressions < 1:
            raise ValueError("min_impressions must be at least 1")
        if self.action not in ("drop", "demote"):
            raise ValueError(f"action must be 'drop' or 'demote', not {self.action!r}")


@dataclass(frozen=True)
class UserExclusions:
    """Per user, candidate indices to leave out and to demote, as CSR `(indptr, indices)`."""

    exclude: Csr
    demote: Csr

    def excluded(self, user: int) -> np.ndarray:
        indptr, indices = self.exclude
        return indices[indptr[user] : indptr[user + 1]]


def _csr(users: np.ndarray, columns: np.ndarray, n_users: int) -> Csr:
    order = np.argsort(users, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=n_users))]).astype(np.int64)
    return indptr, columns[order].astype(np.int64)


def user_exclusions(
    user_codes: np.ndarray,
    candidates: np.ndarray,
    impressions: np.ndarray,
    clicked: np.ndarray,
    n_users: int,
    policy: SeenPolicy,
) -> UserExclusions:
    """Exclusions from the users' exposures (one row per user and article shown or clicked).

    Args:
        user_codes: the row's user (0 .. n_users - 1; negative: a user not ranked, ignored).
        candidates: the row's article as a candidate index (negative: not a candidate, ignored).
        impressions: how often the article was served to the user.
        clicked: whether the user ever clicked it.
    """
    user_codes, candidates = np.asarray(user_codes, np.int64), np.asarray(candidates, np.int64)
    clicked = np.asarray(clicked, dtype=bool)
    known = (user_codes >= 0) & (candidates >= 0)
    seen = known & ~clicked & (np.asarray(impressions) >= policy.min_impressions)
    drop = known & (clicked | (seen if policy.action == "drop" else False))
    demote = seen if policy.action == "demote" else np.zeros_like(seen)
    return UserExclusions(
        exclude=_csr(user_codes[drop], candidates[drop], n_users),
        demote=_csr(user_codes[demote], candidates[demote], n_users),
    )


def popularity_lists(
    scores: np.ndarray, n_users: int, k: int, exclusions: UserExclusions, demotion: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Every user's top k by the fallback ranker's `scores` (one per candidate), exclusions applied.

    The ranker's score is the same for everyone, so this is `top_k_scores` with a one-dimensional
    user vector of 1: the exclusions make the lists personal. Returns `(indices, scores)` like
    `top_k_scores` (-inf where a user has fewer than k eligible candidates).
    """
    if len(scores) == 0:
        return np.empty((n_users, 0), np.int64), np.empty((n_users, 0), np.float32)
    return top_k_scores(
        np.ones((n_users, 1), dtype=np.float32),
        np.asarray(scores, dtype=np.float32).reshape(-1, 1),
        k,
        exclude=exclusions.exclude,
        demote=exclusions.demote,
        demotion=demotion,
    )


def fill_short_lists(
    ids: list[str], scores: np.ndarray, fallback_ids: list[str], fallback_scores: np.ndarray, k: int
) -> tuple[list[str], np.ndarray]:
    """A model's list (best first) filled up to k from the fallback ranker's list, each article once.

    Filled items score below the model's last item (fallback scores lie in [0, 1]), in the
    fallback's order, so a later merge by score keeps the model's items first.
    """
    if len(ids) >= k:
        return ids[:k], scores[:k]
    have = set(ids)
    extra = [
        (a, s)
        for a, s in zip(fallback_ids, np.asarray(fallback_scores).tolist(), strict=True)
        if a not in have
    ]
    extra = extra[: k - len(ids)]
    floor = float(scores[-1]) if len(scores) else 0.0
    filled = np.asarray([floor - 2.0 + min(max(s, 0.0), 1.0) for _, s in extra], dtype=np.float32)
    return ids + [a for a, _ in extra], np.concatenate([np.asarray(scores, np.float32), filled])
