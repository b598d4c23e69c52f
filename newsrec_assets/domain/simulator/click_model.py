"""The true click model of the simulated users, and an oracle that scores impressions with it.

    p(click) = sigmoid(bias + w_interest * interest + w_category * category_interest
                       + w_freshness * freshness + w_position * position_bias + quality)

- `interest`: the user's interest in the article's subcategory relative to their top subcategory
  (1 for the favourite, 0 for subcategories outside the user's mixture); it dominates.
- `category_interest`: the same at the category level, a weaker signal.
- `freshness`: 0.5 ** (age_hours / half_life): news goes stale within hours.
- `position_bias`: 1 / log2(position + 2): users look at the top of a list more.
- `quality`: a per-article latent appeal (some headlines draw more clicks from everyone).

The simulator draws its clicks through `ClickOracle.probability_by_index`, so the oracle loaded
from the ground-truth folder is exactly the model that generated the data: its ranking of an
impression is the ceiling any learned recommender can reach.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

MS_PER_HOUR = 3_600_000
CLICK_MODEL_FILE = "click_model.json"
WORLD_FILE = "world.npz"


@dataclass(frozen=True)
class ClickModelParams:
    """Weights of the true click model (see the module docstring)."""

    bias: float = -3.6
    interest_weight: float = 3.8
    category_weight: float = 0.8
    freshness_weight: float = 1.2
    position_weight: float = 1.2
    freshness_half_life_hours: float = 8.0
    quality_sd: float = 0.5

    def to_json(self) -> dict[str, float]:
        return asdict(self)


def position_bias(positions: np.ndarray) -> np.ndarray:
    """Examination weight of a list position (0 = top), DCG-style."""
    return 1.0 / np.log2(np.asarray(positions, dtype=np.float64) + 2.0)


def freshness(age_ms: np.ndarray, half_life_hours: float) -> np.ndarray:
    """1 at publication, halving every `half_life_hours`."""
    age_hours = np.maximum(np.asarray(age_ms, dtype=np.float64), 0.0) / MS_PER_HOUR
    return np.power(0.5, age_hours / half_life_hours)


def relative_interest(interest: np.ndarray) -> np.ndarray:
    """Each user's interest row divided by its maximum, so the favourite topic scores 1."""
    top = interest.max(axis=1, keepdims=True)
    return np.divide(interest, top, out=np.zeros_like(interest, dtype=np.float64), where=top > 0)


def _sigmoid(logit: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logit))


def to_epoch_ms(moments: Any) -> np.ndarray:
    """Epoch milliseconds from datetime64 values, aware or naive-UTC datetimes, or integers (ms)."""
    array = np.asarray(moments)
    if array.dtype.kind == "M":
        return array.astype("datetime64[ms]").astype(np.int64)
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    seconds: list[float] = []
    for moment in array.ravel().tolist():
        if not isinstance(moment, datetime):
            raise TypeError(f"expected datetimes, datetime64 or epoch ms, got {type(moment).__name__}")
        seconds.append((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())
    return np.round(np.asarray(seconds, dtype=np.float64) * 1000).astype(np.int64).reshape(array.shape)


def parse_numbered_ids(ids: Sequence[str] | np.ndarray, prefix: str, count: int) -> np.ndarray:
    """Indices of ids such as `u000042` (index 41); raises KeyError for ids outside the world."""
    flat = np.asarray(ids).ravel().tolist()
    try:
        numbers = np.asarray([int(text[1:]) if text[:1] == prefix else -1 for text in flat], dtype=np.int64)
    except (TypeError, ValueError) as error:
        raise KeyError(f"ids must look like {prefix}000001") from error
    unknown = (numbers < 1) | (numbers > count)
    if unknown.any():
        raise KeyError(f"unknown id {flat[int(np.flatnonzero(unknown)[0])]!r}")
    return (numbers - 1).reshape(np.shape(ids))


class ClickOracle:
    """The true click probability of any (user, article, time, position), loadable from ground truth."""

    def __init__(
        self,
        params: ClickModelParams,
        user_interest: np.ndarray,
        subcategory_category: np.ndarray,
        article_subcategory: np.ndarray,
        article_quality: np.ndarray,
        article_published_ms: np.ndarray,
    ) -> None:
        self.params = params
        n_categories = int(subcategory_category.max()) + 1
        category_interest = np.zeros((user_interest.shape[0], n_categories))
        for subcategory, category in enumerate(subcategory_category):
            category_interest[:, category] += user_interest[:, subcategory]
        self._subcategory_interest = relative_interest(user_interest)
        self._category_interest = relative_interest(category_interest)
        self._subcategory_category = np.asarray(subcategory_category, dtype=np.int64)
        self.article_subcategory = np.asarray(article_subcategory, dtype=np.int64)
        self.article_quality = np.asarray(article_quality, dtype=np.float64)
        self.article_published_ms = np.asarray(article_published_ms, dtype=np.int64)

    @property
    def n_users(self) -> int:
        return self._subcategory_interest.shape[0]

    @property
    def n_articles(self) -> int:
        return len(self.article_subcategory)

    @classmethod
    def load(cls, folder: str | Path) -> ClickOracle:
        """Load the oracle from a ground-truth folder written by the simulator."""
        folder = Path(folder)
        description = json.loads((folder / CLICK_MODEL_FILE).read_text())
        with np.load(folder / WORLD_FILE) as world:
            return cls(
                params=ClickModelParams(**description["params"]),
                user_interest=world["user_interest"],
                subcategory_category=world["subcategory_category"],
                article_subcategory=world["article_subcategory"],
                article_quality=world["article_quality"],
                article_published_ms=world["article_published_ms"],
            )

    def probability_by_index(
        self,
        user_index: np.ndarray,
        article_index: np.ndarray,
        shown_ms: np.ndarray,
        positions: np.ndarray,
    ) -> np.ndarray:
        """Click probabilities for broadcastable arrays of user/article indices, epoch ms and positions."""
        params = self.params
        subcategory = self.article_subcategory[article_index]
        logit = (
            params.bias
            + params.interest_weight * self._subcategory_interest[user_index, subcategory]
            + params.category_weight
            * self._category_interest[user_index, self._subcategory_category[subcategory]]
            + params.freshness_weight
            * freshness(shown_ms - self.article_published_ms[article_index], params.freshness_half_life_hours)
            + params.position_weight * position_bias(positions)
            + self.article_quality[article_index]
        )
        return _sigmoid(logit)

    def click_probability(
        self,
        user_ids: Sequence[str] | np.ndarray,
        article_ids: Sequence[str] | np.ndarray,
        shown_at: Any,
        positions: Sequence[int] | np.ndarray,
    ) -> np.ndarray:
        """True click probabilities, element-wise over equally shaped (or broadcastable) arrays.

        `user_ids`/`article_ids` are the app's ids (`u000042`, `a000123`); `shown_at` holds
        datetimes, datetime64 values or epoch milliseconds; `positions` are 0-based list positions.
        Raises KeyError for an id the simulated world does not know.
        """
        user_index = parse_numbered_ids(user_ids, "u", self.n_users)
        article_index = parse_numbered_ids(article_ids, "a", self.n_articles)
        return self.probability_by_index(
            user_index, article_index, to_epoch_ms(shown_at), np.asarray(positions, dtype=np.int64)
        )
