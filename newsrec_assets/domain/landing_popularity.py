"""The popularity list straight from change records, before any warehouse or model exists.

`newsrec demo` serves this list the moment the API starts, from the simulated landing files, while
the initial build (ingestion, dbt, encoder, NAML) runs in Dagster: the live articles (latest change
per article, published, not deleted) ranked by `ranking.cold_start_list` on their views in the last
`window` before the newest change. Re-delivered records (same change key) count once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from newsrec_assets.domain.cdc import ChangeRecord, parse_ts, source_order
from newsrec_assets.domain.ranking import cold_start_list


@dataclass(frozen=True)
class PopularNow:
    articles: dict[str, dict]  # live article id -> its latest payload
    article_ids: np.ndarray  # the cold-start list, best first
    scores: np.ndarray
    as_of: datetime  # the newest change seen


def popular_now(
    records: Iterable[ChangeRecord], k: int, window: timedelta = timedelta(hours=24)
) -> PopularNow | None:
    """Live articles and their popularity list from `articles` records and the views of
    `user_article_views` and `api_view_events` records; None when no article is live."""
    latest: dict[str, ChangeRecord] = {}
    views: list[tuple[datetime, str]] = []
    seen: set[str] = set()
    for record in records:
        if record.change_key in seen:
            continue
        seen.add(record.change_key)
        if record.table == "articles" and record.change_type != "UPDATE-DELETE":
            article_id = str(record.payload.get("article_id"))
            if article_id not in latest or source_order(record) > source_order(latest[article_id]):
                latest[article_id] = record
        elif record.table in ("user_article_views", "api_view_events") and not record.is_deleted:
            views.append((record.source_timestamp, str(record.payload.get("article_id"))))
    live = {
        article_id: record.payload
        for article_id, record in latest.items()
        if not record.is_deleted and record.payload.get("status") == "published"
    }
    if not live:
        return None
    as_of = max([r.source_timestamp for r in latest.values()] + [moment for moment, _ in views])
    counts = Counter(article_id for moment, article_id in views if moment > as_of - window)
    ids = list(live)
    published = [live[a]["published_at"] for a in ids]
    published_s = np.asarray([_seconds(p) for p in published], dtype=np.float64)
    popularity = np.asarray([counts.get(a, 0) for a in ids], dtype=np.float64)
    top_ids, scores = cold_start_list(ids, published_s, popularity, as_of.timestamp(), k)
    return PopularNow(live, top_ids, scores, as_of)


def _seconds(value) -> float:
    return (value if isinstance(value, datetime) else parse_ts(value)).timestamp()
