"""Writes view events reported over HTTP to the landing zone, as change records of the CDC stream.

Apps without change-data-capture post views to `POST /v1/events`. Each becomes what the stream
would have delivered for the app's `user_article_views` row (docs/data-model.md), so ingestion
and dbt treat both sources alike:

- `view_count` and `first_viewed_at` come from a per-(user, article) counter in the online store
  (`OnlineStore.record_view`), so the n-th reported view is the row's n-th version: `INSERT` for
  the first view, `UPDATE-INSERT` after; `last_viewed_at` is the event's `viewed_at`.
- `source_timestamp` and `read_timestamp` are when the API received the event (the "commit"
  time), `log_file` is `api-events` and `log_position` the store's monotonic counter, so the
  change key is unique and re-deliveries stay idempotent.
- One file per event, `user_article_views/<YYYY-MM-DD>/api-<timestamp>-<uuid>.jsonl` under the
  landing zone's root, written through the `LandingZone` port (a local folder, or the GCS prefix
  Datastream writes to in production), which makes it appear atomically (temporary name, then
  rename): ingestion never lists a partial file.

Caveats: if writing the file fails after the counter moved, that view number is skipped and the
next reported view's version accounts for it (dbt's view-count differences count it then). The
counter belongs to the API: an app must not report the same rows both through CDC and here.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from newsrec_assets.domain.cdc import ChangeRecord
from newsrec_assets.resources.landing import LandingZone
from newsrec_assets.resources.online_store import ViewCount

TABLE = "user_article_views"
LOG_FILE = "api-events"
READ_METHOD = "newsrec-api"
STREAM_NAME = "newsrec-api"


def view_change_record(view: ViewCount, received_at: datetime, impression_id: str | None) -> ChangeRecord:
    """The change record of the `user_article_views` row after this view."""
    return ChangeRecord(
        table=TABLE,
        change_type="INSERT" if view.view_count == 1 else "UPDATE-INSERT",
        payload={
            "user_id": view.user_id,
            "article_id": view.article_id,
            "view_count": view.view_count,
            "first_viewed_at": view.first_viewed_at,
            "last_viewed_at": view.last_viewed_at,
            "last_impression_id": impression_id,
        },
        source_timestamp=received_at,
        read_timestamp=received_at,
        log_file=LOG_FILE,
        log_position=view.log_position,
        read_method=READ_METHOD,
        stream_name=STREAM_NAME,
    )


class LandingWriter:
    """Lands change records through the landing zone port, one file each."""

    def __init__(self, zone: LandingZone) -> None:
        self.zone = zone

    def write(self, record: ChangeRecord) -> str:
        """Land one record; returns its path relative to the zone root."""
        moment = record.source_timestamp.astimezone(UTC)
        path = f"{record.table}/{moment:%Y-%m-%d}/api-{moment:%Y%m%dT%H%M%S%f}Z-{uuid.uuid4().hex}.jsonl"
        self.zone.write_file(path, (record.to_json_line() + "\n").encode("utf-8"))
        return path
