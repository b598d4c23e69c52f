"""View events reconstructed from a behaviour table that is updated in place.

The app keeps one `user_article_views` row per (user, article) and overwrites it on every view, so
the events live only in the sequence of its versions: each version's `view_count` minus the
previous version's is the number of views that change recorded. This is the reference
implementation of what the dbt model `int_view_events` does in SQL; tests hold the two together.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from newsrec_assets.domain.cdc import ChangeRecord


@dataclass(frozen=True, order=True)
class ViewEvent:
    user_id: str
    article_id: str
    view_number: int
    viewed_at: datetime
    impression_id: str | None


def _order_key(record: ChangeRecord) -> tuple:
    return (record.source_timestamp, record.lsn or "", record.log_file or "", record.log_position or 0)


def reconstruct_view_events(records: Iterable[ChangeRecord]) -> list[ViewEvent]:
    """Every view event, from change records delivered in any order and any number of times."""
    distinct: dict[str, ChangeRecord] = {}
    for record in records:
        if record.table == "user_article_views" and record.change_type in ("INSERT", "UPDATE-INSERT"):
            distinct.setdefault(record.change_key, record)

    versions_by_row: dict[tuple[str, str], list[ChangeRecord]] = {}
    for record in distinct.values():
        row = (record.payload["user_id"], record.payload["article_id"])
        versions_by_row.setdefault(row, []).append(record)

    events: list[ViewEvent] = []
    for (user_id, article_id), versions in versions_by_row.items():
        previous_count = 0
        for version in sorted(versions, key=_order_key):
            view_count = version.payload["view_count"]
            # A version can record more than one view when the app coalesced writes; each is an event.
            for view_number in range(previous_count + 1, view_count + 1):
                events.append(
                    ViewEvent(
                        user_id=user_id,
                        article_id=article_id,
                        view_number=view_number,
                        viewed_at=version.payload["last_viewed_at"],
                        impression_id=version.payload["last_impression_id"],
                    )
                )
            previous_count = max(previous_count, view_count)
    return sorted(events)
