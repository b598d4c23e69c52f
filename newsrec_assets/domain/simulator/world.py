"""The simulated world: users with latent interests, and the newsroom's article catalogue.

Everything here is ground truth that the recommender never sees directly: it only sees the change
records that the app's database emits about these people and articles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from newsrec_assets.domain.simulator.vocabulary import ArticleTextGenerator, Taxonomy

MS_PER_MINUTE = 60_000
MS_PER_HOUR = 3_600_000
MS_PER_DAY = 86_400_000
NEVER_MS = np.iinfo(np.int64).max  # removal time of an article that is never removed
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Relative intensity by hour of day (UTC stands in for the app's local time): readers come in the
# morning commute, at lunch and in the evening; the newsroom publishes mostly in office hours.
# fmt: off
READING_BY_HOUR = np.array(
    [0.35, 0.2, 0.12, 0.1, 0.12, 0.25, 0.6, 1.2, 1.6, 1.3, 1.0, 1.0,
     1.35, 1.2, 1.0, 1.0, 1.1, 1.3, 1.55, 1.75, 1.65, 1.35, 0.95, 0.6]
)
PUBLISHING_BY_HOUR = np.array(
    [0.1, 0.06, 0.05, 0.05, 0.1, 0.3, 0.8, 1.4, 1.6, 1.5, 1.3, 1.2,
     1.1, 1.1, 1.2, 1.3, 1.3, 1.2, 1.0, 0.8, 0.6, 0.5, 0.3, 0.2]
)
# fmt: on


def user_id(index: int) -> str:
    return f"u{index + 1:06d}"


def article_id(index: int) -> str:
    return f"a{index + 1:06d}"


def impression_id(number: int) -> str:
    return f"i{number:09d}"


def ms_to_datetime(epoch_ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=int(epoch_ms))


def datetime_to_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(milliseconds=1)


def sample_diurnal_times(
    rng: np.random.Generator, count: int, start_ms: int, end_ms: int, hourly_weights: np.ndarray
) -> np.ndarray:
    """`count` epoch-ms times in [start_ms, end_ms), drawn from an hour-of-day intensity curve."""
    first_hour = start_ms // MS_PER_HOUR * MS_PER_HOUR
    hour_starts = np.arange(first_hour, end_ms, MS_PER_HOUR, dtype=np.int64)
    span_starts = np.maximum(hour_starts, start_ms)
    span_lengths = np.minimum(hour_starts + MS_PER_HOUR, end_ms) - span_starts
    weights = hourly_weights[(hour_starts // MS_PER_HOUR) % 24] * span_lengths
    chosen = rng.choice(len(hour_starts), size=count, p=weights / weights.sum())
    offsets = np.floor(rng.random(count) * span_lengths[chosen]).astype(np.int64)
    return span_starts[chosen] + offsets


@dataclass
class Users:
    """Latent reader profiles: a sparse interest mixture over subcategories and an activity rate."""

    interest: np.ndarray  # users, subcategories; each row sums to 1 and is zero outside the mixture
    sessions_per_day: np.ndarray  # users

    @property
    def count(self) -> int:
        return len(self.sessions_per_day)


def generate_users(
    rng: np.random.Generator, count: int, taxonomy: Taxonomy, mean_sessions_per_day: float
) -> Users:
    """Users with 1-6 favourite subcategories, weighted by a Dirichlet draw, and lognormal activity."""
    # Some subcategories attract more readers than others; favourites are drawn in proportion.
    audience_share = rng.dirichlet(np.full(taxonomy.n_subcategories, 2.0))
    favourites_per_user = np.clip(1 + rng.poisson(1.3, size=count), 1, 6)
    interest = np.zeros((count, taxonomy.n_subcategories))
    for user, n_favourites in enumerate(favourites_per_user):
        favourites = rng.choice(taxonomy.n_subcategories, size=n_favourites, replace=False, p=audience_share)
        interest[user, favourites] = rng.dirichlet(np.full(n_favourites, 0.8))
    # A heavy-tailed activity rate: a few readers open the app many times a day, most rarely.
    sigma = 0.9
    sessions_per_day = rng.lognormal(np.log(mean_sessions_per_day) - sigma**2 / 2, sigma, size=count)
    return Users(interest=interest, sessions_per_day=sessions_per_day)


@dataclass
class Articles:
    """The catalogue as ground truth: topic, latent appeal and when each article is visible."""

    subcategory: np.ndarray
    quality: np.ndarray
    published_ms: np.ndarray
    removed_ms: np.ndarray  # unpublish or delete time, NEVER_MS if still live

    @property
    def count(self) -> int:
        return len(self.subcategory)

    def live_mask(self, visible_from_ms: int, visible_until_ms: int) -> np.ndarray:
        """Articles published by `visible_from_ms` and not removed before `visible_until_ms`."""
        return (self.published_ms <= visible_from_ms) & (self.removed_ms > visible_until_ms)

    def append(self, subcategory: int, quality: float, published_ms: int) -> int:
        """Add a newly published article and return its index."""
        self.subcategory = np.append(self.subcategory, np.int64(subcategory))
        self.quality = np.append(self.quality, quality)
        self.published_ms = np.append(self.published_ms, np.int64(published_ms))
        self.removed_ms = np.append(self.removed_ms, NEVER_MS)
        return self.count - 1


@dataclass(order=True)
class ArticleChange:
    """One CMS change of the `articles` table: the row after the change (before it, for DELETE)."""

    time_ms: int
    article_index: int
    change_type: str = field(compare=False)
    row: dict[str, Any] = field(compare=False)


class Newsroom:
    """Writes articles: topic mix, text, and the CMS lifecycle (publish, edits, unpublish, delete)."""

    FOLLOW_UP_PROBABILITY = 0.3  # a new article rewords the headline of a recent story
    SAME_TOPIC_FOLLOW_UP = 0.6  # ... that story being the newest of its own subcategory
    STORIES_REMEMBERED = 40
    EDIT_PROBABILITY = 0.18
    SECOND_EDIT_PROBABILITY = 0.3
    UNPUBLISH_PROBABILITY = 0.03
    DELETE_PROBABILITY = 0.012

    def __init__(
        self,
        rng: np.random.Generator,
        taxonomy: Taxonomy,
        quality_sd: float,
        topic_share: np.ndarray | None = None,
    ) -> None:
        self.rng = rng
        self.taxonomy = taxonomy
        self.quality_sd = quality_sd
        self.text = ArticleTextGenerator(taxonomy)
        # The newsroom's own topic mix, independent of what readers like.
        if topic_share is None:
            topic_share = rng.dirichlet(np.full(taxonomy.n_subcategories, 3.0))
        self.topic_share = topic_share
        self.recent_headlines: list[tuple[int, str]] = []  # (subcategory, title), oldest first

    def draw_subcategory(self) -> int:
        return int(self.rng.choice(self.taxonomy.n_subcategories, p=self.topic_share))

    def draw_quality(self) -> float:
        return float(self.rng.normal(0.0, self.quality_sd))

    def new_row(self, index: int, subcategory: int, published_ms: int) -> dict[str, Any]:
        """The CMS row of a freshly published article."""
        published_at = ms_to_datetime(published_ms)
        title = self._headline(subcategory)
        self.recent_headlines = [*self.recent_headlines[-self.STORIES_REMEMBERED + 1 :], (subcategory, title)]
        return {
            "article_id": article_id(index),
            "title": title,
            "body": self.text.body(self.rng, subcategory),
            "category": self.taxonomy.categories[self.taxonomy.subcategory_category[subcategory]],
            "subcategory": self.taxonomy.subcategories[subcategory],
            "status": "published",
            "published_at": published_at,
            "updated_at": published_at,
        }

    def _headline(self, subcategory: int) -> str:
        """A new headline, or a rewording of a recent story's (a follow-up, maybe from another section)."""
        rng = self.rng
        if not self.recent_headlines or rng.random() >= self.FOLLOW_UP_PROBABILITY:
            return self.text.title(rng, subcategory)
        same_topic = [title for topic, title in self.recent_headlines if topic == subcategory]
        if same_topic and rng.random() < self.SAME_TOPIC_FOLLOW_UP:
            story = same_topic[-1]
        else:
            story = self.recent_headlines[int(rng.integers(len(self.recent_headlines)))][1]
        return self.text.paraphrase(rng, story, subcategory)

    def publish_history(self, count: int, start_ms: int, end_ms: int) -> tuple[Articles, list[ArticleChange]]:
        """`count` articles published in [start_ms, end_ms), with every CMS change before end_ms."""
        rng = self.rng
        published_ms = np.sort(sample_diurnal_times(rng, count, start_ms, end_ms, PUBLISHING_BY_HOUR))
        subcategory = rng.choice(self.taxonomy.n_subcategories, size=count, p=self.topic_share)
        quality = rng.normal(0.0, self.quality_sd, size=count)
        removed_ms = np.full(count, NEVER_MS, dtype=np.int64)
        changes: list[ArticleChange] = []
        for index in range(count):
            row = self.new_row(index, int(subcategory[index]), int(published_ms[index]))
            changes.append(ArticleChange(int(published_ms[index]), index, "INSERT", dict(row)))
            later_changes, removed_ms[index] = self._lifecycle(
                index, int(subcategory[index]), int(published_ms[index]), row, end_ms
            )
            changes.extend(later_changes)
        changes.sort()
        articles = Articles(subcategory.astype(np.int64), quality, published_ms.astype(np.int64), removed_ms)
        return articles, changes

    def _lifecycle(
        self, index: int, subcategory: int, published_ms: int, row: dict[str, Any], end_ms: int
    ) -> tuple[list[ArticleChange], int]:
        """Edits and removal of one article; returns its changes and its removal time."""
        rng = self.rng
        changes: list[ArticleChange] = []
        moment = published_ms
        edits = int(rng.random() < self.EDIT_PROBABILITY)
        edits += int(edits and rng.random() < self.SECOND_EDIT_PROBABILITY)
        for _ in range(edits):
            moment += 5 * MS_PER_MINUTE + int(rng.exponential(3 * MS_PER_HOUR))
            if rng.random() < 0.5:
                row["title"] = self.text.paraphrase(rng, row["title"], subcategory)
            else:
                row["body"] = row["body"] + " " + self.text.correction(rng, subcategory)
            row["updated_at"] = ms_to_datetime(moment)
            changes.append(ArticleChange(moment, index, "UPDATE-INSERT", dict(row)))
        removed_ms = NEVER_MS
        fate = rng.random()
        if fate < self.UNPUBLISH_PROBABILITY:
            moment += 10 * MS_PER_MINUTE + int(rng.exponential(12 * MS_PER_HOUR))
            removed_ms = moment
            row["status"] = "unpublished"
            row["updated_at"] = ms_to_datetime(moment)
            changes.append(ArticleChange(moment, index, "UPDATE-INSERT", dict(row)))
            if rng.random() < 0.4:  # some unpublished articles are later removed for good
                moment += int(rng.exponential(6 * MS_PER_HOUR))
                changes.append(ArticleChange(moment, index, "DELETE", dict(row)))
        elif fate < self.UNPUBLISH_PROBABILITY + self.DELETE_PROBABILITY:
            moment += 10 * MS_PER_MINUTE + int(rng.exponential(24 * MS_PER_HOUR))
            removed_ms = moment
            changes.append(ArticleChange(moment, index, "DELETE", dict(row)))
        # Changes after the simulated horizon have not happened yet.
        kept = [change for change in changes if change.time_ms < end_ms]
        return kept, removed_ms if removed_ms < end_ms else NEVER_MS
