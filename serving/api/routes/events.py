"""`POST /v1/events`: view events from apps without a CDC stream, written to the landing zone."""

from __future__ import annotations

import logging
from datetime import timedelta

from fastapi import APIRouter, HTTPException, status
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

from newsrec_assets.domain.cdc import format_ts
from newsrec_assets.resources.online_store.base import now_utc, to_utc
from serving.api.deps import ApiKeyDep, LandingDep, MetricsDep, SettingsDep, StoreDep
from serving.core.config import API_V1_PREFIX
from serving.core.responses import OrjsonResponse
from serving.models import ErrorResponse, ViewEventAccepted, ViewEventIn
from serving.services.landing import view_change_record

logger = logging.getLogger(__name__)

router = APIRouter(prefix=f"{API_V1_PREFIX}/events", tags=["events"])


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ViewEventAccepted,
    responses={401: {"model": ErrorResponse}, 422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
)
def post_view_event(
    event: ViewEventIn,
    _api_key: ApiKeyDep,
    store: StoreDep,
    landing: LandingDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> Response:
    """Record one article view (requires `X-API-Key`).

    It lands as a `user_article_views` change record (INSERT for the user's first view of the
    article, UPDATE-INSERT after), exactly as the CDC stream would deliver the row's new version.
    """
    received_at = now_utc()
    viewed_at = received_at if event.viewed_at is None else to_utc(event.viewed_at)
    if viewed_at - received_at > timedelta(seconds=settings.max_event_clock_skew_seconds):
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", "viewed_at"), "msg": "viewed_at lies in the future"}]
        )
    view = metrics.store_timer("record_view")(store.record_view, event.user_id, event.article_id, viewed_at)
    record = view_change_record(view, received_at, event.impression_id)
    try:
        path = landing.write(record)
    except Exception as error:  # a full disk, a bucket that is unreachable: the client retries
        logger.warning("could not land view event %s", record.change_key, exc_info=True)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="the landing zone is unavailable, retry shortly",
            headers={"Retry-After": "1"},
        ) from error
    metrics.events.inc()
    body = {
        "status": "accepted",
        "user_id": view.user_id,
        "article_id": view.article_id,
        "view_count": view.view_count,
        "viewed_at": format_ts(view.last_viewed_at),
        "change_key": record.change_key,
        "landing_file": path,
    }
    return OrjsonResponse(body, status_code=status.HTTP_202_ACCEPTED)
