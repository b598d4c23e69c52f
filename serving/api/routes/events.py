"""`POST /v1/events`: view events from apps without a CDC stream, landed as change records."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Security, status
from fastapi.exceptions import RequestValidationError

from newsrec_assets.resources.online_store.base import now_utc, to_utc
from serving.api.deps import EventsDep, MetricsDep, SettingsDep
from serving.core.security import KeyedRoute, api_key_scheme
from serving.models import ErrorResponse, ViewEventAccepted, ViewEventIn
from serving.services.landing import ViewEvent

router = APIRouter(
    prefix="/v1/events", tags=["events"], route_class=KeyedRoute, dependencies=[Security(api_key_scheme)]
)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ViewEventAccepted,
    responses={code: {"model": ErrorResponse} for code in (400, 401, 413, 422, 503)},
)
async def post_view_event(
    event: ViewEventIn, settings: SettingsDep, events: EventsDep, metrics: MetricsDep
) -> dict[str, Any]:
    """Record one article view (requires `X-API-Key`).

    It lands as an `api_view_events` change record (an INSERT with a new `event_id`, returned in
    the answer). The answer comes once the record is written; a 503 means it was not, and may be
    retried.
    """
    received_at = now_utc()
    earliest = max(
        to_utc(settings.earliest_viewed_at), received_at - timedelta(days=settings.max_event_age_days)
    )
    latest = received_at + timedelta(seconds=settings.max_event_clock_skew_seconds)
    try:
        viewed_at = received_at if event.viewed_at is None else to_utc(event.viewed_at)
    except OverflowError:  # so far out that it has no UTC equivalent
        viewed_at = None
    if viewed_at is None or not earliest <= viewed_at <= latest:
        message = f"viewed_at must lie in {earliest.isoformat()} .. {latest.isoformat()}"
        raise RequestValidationError([{"type": "value_error", "loc": ("body", "viewed_at"), "msg": message}])
    accepted = await events.submit(ViewEvent(event.user_id, event.article_id, viewed_at, event.impression_id))
    metrics.events.inc()
    return accepted
