"""View events reconstructed from a behaviour table that is updated in place.

The app keeps one `user_article_views` row per (user, article) and overwrites it on every view, so
the events live only in the sequence of its versions: each version's `view_count` minus the
count the row had already reached is the number of views that change recorded. This is the
reference implementation of what the dbt models `int_view_row_versions` and `int_view_events` do in
SQL; tests hold the two together. The rules, in source order (`cdc.source_order`):

- A row's life ends with its DELETE; a re-insert starts a new life whose `view_count` starts
  again. View numbers continue across lives (the n-th view of the article by the user), so views
  after a delete and re-insert are counted, not hidden below the old count.
- A version records `view_count - baseline` views, where the baseline is the highest count of the
  life's earlier versions that were not spikes. A spike is a version more than
  `max_views_per_change` above every earlier version of its life: it is rejected (no events are
  made up for it) and does not raise the baseline, so a corrupt counter followed by normal
  versions loses nothing. A non-spike version that still records more than
  `max_views_per_change` views is rejected too, but does raise the baseline (the row really is at
  that count; the views in the jump are not invented). Rejected versions are listed, never dropped
  silently (dbt: `int_rejected_view_jumps`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from newsrec_assets.domain.cdc import ChangeRecord, source_order

# dbt var `max_views_per_change`: the largest number of views one change may record.
MAX_VIEWS_PER_CHANGE = 10_000

VersionStatus = Literal["recorded", "no_new_views", "rejected_jump"]


@dataclass(frozen=True, order=True)
class ViewEvent:
    user_id: str
    article_id: str
    view_number: int
    viewed_at: datetime
    impression_id: str | None


@dataclass(frozen=True)
class RowVersion:
    """One version of a `user_article_views` row and what it recorded."""

    record: ChangeRecord
    row_life: int  # 1 until the row's first DELETE, then 2 after its re-insert, ...
    baseline_count: int  # the count the life had reached before this version
    views_before_life: int  # views recorded by the row's earlier lives (view numbers continue)
    status: VersionStatus

    @property
    def views_claimed(self) -> int:
        return self.record.payload["view_count"] - self.baseline_count


def view_row_versions(
    records: Iterable[ChangeRecord], max_views_per_change: int = MAX_VIEWS_PER_CHANGE
) -> list[RowVersion]:
    """Every distinct version of every `user_article_views` row, classified (see the module doc)."""
    distinct: dict[str, ChangeRecord] = {}
    for record in records:
        if record.table == "user_article_views" and record.change_type in (
            "INSERT",
            "UPDATE-INSERT",
            "DELETE",
        ):
            distinct.setdefault(record.change_key, record)

    changes_by_row: dict[tuple[str, str], list[ChangeRecord]] = {}
    for record in distinct.values():
        changes_by_row.setdefault((record.payload["user_id"], record.payload["article_id"]), []).append(
            record
        )

    versions: list[RowVersion] = []
    for changes in changes_by_row.values():
        life, views_before_life = 1, 0
        highest = baseline = 0  # over the life's earlier versions: all of them / non-spikes
        for change in sorted(changes, key=source_order):
            if change.change_type == "DELETE":
                life, views_before_life = life + 1, views_before_life + baseline
                highest = baseline = 0
                continue
            view_count = change.payload["view_count"]
            spike = view_count - highest > max_views_per_change
            if spike or view_count - baseline > max_views_per_change:
                status: VersionStatus = "rejected_jump"
            else:
                status = "recorded" if view_count > baseline else "no_new_views"
            versions.append(RowVersion(change, life, baseline, views_before_life, status))
            highest = max(highest, view_count)
            if not spike:
                baseline = max(baseline, view_count)
    return versions


def reconstruct_view_events(
    records: Iterable[ChangeRecord], max_views_per_change: int = MAX_VIEWS_PER_CHANGE
) -> list[ViewEvent]:
    """Every view event, from change records delivered in any order and any number of times."""
    events: list[ViewEvent] = []
    for version in view_row_versions(records, max_views_per_change):
        if version.status != "recorded":
            continue
        payload = version.record.payload
        first = version.views_before_life + version.baseline_count + 1
        # A version can record more than one view when the app coalesced writes; each is an event.
        for view_number in range(first, first + version.views_claimed):
            events.append(
                ViewEvent(
                    user_id=payload["user_id"],
                    article_id=payload["article_id"],
                    view_number=view_number,
                    viewed_at=payload["last_viewed_at"],
                    impression_id=payload["last_impression_id"],
                )
            )
    return sorted(events)
