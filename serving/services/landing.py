"""What the API lands, as change records of the CDC stream (docs/data-model.md), one object per window.

- **View events** become `api_view_events` rows, one INSERT per view with an `event_id` of its
  own, under this process's own `log_file`, `api-events-<id>`, at running positions. A view is a
  row of its own, not a new version of the app's `user_article_views` row, so the app's stream
  may write the same user and article without either writer's views hiding the other's.
- **Exposures** become `served_lists` rows (one per served list: its articles in rank order and
  the A/B variant that ranked it) under this process's own `log_file`, `api-exposures-<id>`, at
  running positions: unique across workers and restarts.

`source_timestamp`: when an event's window was written (the row's commit), when a list was served.
Objects, `<table>/<YYYY-MM-DD>/api-<timestamp>-<uuid>.jsonl`, go through the `LandingZone` port,
which makes them appear whole (locally with an fsync: an acknowledged event survives a crash).
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from newsrec_assets.domain.cdc import ChangeRecord, format_ts
from newsrec_assets.resources.landing import LandingZone
from newsrec_assets.resources.online_store.base import now_utc


class LandingUnavailable(Exception):
    """The landing zone could not take a window's object."""


@dataclass(frozen=True)
class ViewEvent:
    user_id: str
    article_id: str
    viewed_at: datetime
    impression_id: str | None


@dataclass(frozen=True)
class Exposure:
    request_id: str
    user_id: str
    article_ids: list[str]
    served_at: datetime
    offset: int  # position of the first article in the whole list (paging)
    variant: str  # the A/B variant that ranked it


def land(zone: LandingZone, table: str, lines: list[bytes], moment: datetime) -> str:
    """Write one object of JSON lines; returns its path (raises `LandingUnavailable`)."""
    path = f"{table}/{moment:%Y-%m-%d}/api-{moment:%Y%m%dT%H%M%S%f}Z-{uuid.uuid4().hex}.jsonl"
    try:
        zone.write_file(path, b"\n".join(lines) + b"\n")
    except Exception as error:  # a full disk, an unreachable bucket: the caller retries
        raise LandingUnavailable(f"could not write {path}: {error}") from error
    return path


class ProcessLog:
    """This API process's own change log, `api-<name>-<id>` at running positions, so that change
    keys are unique across workers and restarts. A position is taken for good even if its write
    fails: a retried record never reuses one."""

    def __init__(self, name: str) -> None:
        self.log_file = f"api-{name}-{uuid.uuid4().hex[:16]}"
        self._positions = itertools.count(1)

    def insert(
        self, table: str, payload: dict[str, Any], source_ts: datetime, read_ts: datetime
    ) -> ChangeRecord:
        return ChangeRecord(
            table, "INSERT", payload, source_ts, read_ts, log_file=self.log_file,
            log_position=next(self._positions), read_method="newsrec-api", stream_name="newsrec-api",
        )  # fmt: skip


class EventLanding:
    """Lands a window of view events (`WindowBatcher.flush`): one result dict per event."""

    def __init__(self, zone: LandingZone) -> None:
        self.zone, self.log = zone, ProcessLog("events")

    def __call__(self, events: list[ViewEvent]) -> list[dict[str, Any]]:
        received_at = now_utc()
        records = [
            self.log.insert(
                "api_view_events",
                {
                    "event_id": uuid.uuid4().hex,
                    "user_id": event.user_id,
                    "article_id": event.article_id,
                    "viewed_at": event.viewed_at,
                    "impression_id": event.impression_id,
                },
                received_at,
                received_at,
            )
            for event in events
        ]
        path = land(self.zone, "api_view_events", [r.to_json_line().encode() for r in records], received_at)
        return [
            {
                "status": "accepted",
                "event_id": record.payload["event_id"],
                "user_id": event.user_id,
                "article_id": event.article_id,
                "viewed_at": format_ts(event.viewed_at),
                "change_key": record.change_key,
                "landing_file": path,
            }
            for event, record in zip(events, records, strict=True)
        ]


class ExposureLanding:
    """Lands exposures as `served_lists` change records: `render` (on the event loop, when a list
    is served) turns one into its JSON line, `__call__` (`WindowBatcher.flush`, a worker thread)
    writes a window of them as one object.

    One record per list, not per article: at 1,000 lists a second of 50 articles that is 50,000
    records a second less to write, ingest and pay for; dbt expands each list (`int_impressions`).
    """

    def __init__(self, zone: LandingZone) -> None:
        self.zone, self.log = zone, ProcessLog("exposures")

    def render(self, exposure: Exposure) -> bytes:
        payload = {"impression_id": exposure.request_id, "user_id": exposure.user_id,
                   "article_ids": " ".join(exposure.article_ids), "first_position": exposure.offset,
                   "shown_at": exposure.served_at, "variant": exposure.variant}  # fmt: skip
        return orjson.dumps(self.log.insert("served_lists", payload, exposure.served_at, now_utc()).to_json())

    def __call__(self, rendered: list[bytes]) -> list[None]:
        if rendered:
            land(self.zone, "served_lists", rendered, now_utc())
        return [None] * len(rendered)
