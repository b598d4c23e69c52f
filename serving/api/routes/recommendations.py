"""`GET /v1/users/{user_id}/recommendations`: a user's top-k list, read from the online store.

The route below documents and validates the endpoint; well-formed requests usually never reach
it, because `serving.api.fast_lane` answers them first with the same `recommend`.
"""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import State
from starlette.responses import Response

from serving.core.config import API_V1_PREFIX
from serving.models import ID_MAX_LENGTH, ID_PATTERN, ErrorResponse, RecommendationsResponse
from serving.services.recommender import Served

router = APIRouter(prefix=f"{API_V1_PREFIX}/users", tags=["recommendations"])
ROUTE_PATH = f"{API_V1_PREFIX}/users/{{user_id}}/recommendations"

UserIdPath = Annotated[
    str, Path(pattern=ID_PATTERN, min_length=1, max_length=ID_MAX_LENGTH, description="user id, e.g. u000042")
]


@router.get(
    "/{user_id}/recommendations",
    response_model=RecommendationsResponse,
    responses={422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
)
async def get_recommendations(
    user_id: UserIdPath,
    request: Request,
    k: Annotated[int | None, Query(ge=1, description="list length, 1..max_k (default default_k)")] = None,
) -> Response:
    """The user's ranked list with article metadata, scores and provenance.

    Articles published after the list was computed are merged in at read time. Unknown users get
    the cold-start list (layer `cold_start`). What was served is queued for the exposure log
    (written in batches by a background thread).
    """
    settings = request.app.state.settings
    if k is not None and k > settings.max_k:
        raise RequestValidationError(
            [
                {
                    "type": "less_than_equal",
                    "loc": ("query", "k"),
                    "msg": f"Input should be less than or equal to {settings.max_k}",
                    "input": k,
                }
            ]
        )
    served = await recommend(request.app.state, user_id, k)
    return Response(served.body, media_type="application/json", headers={"X-Request-ID": served.request_id})


async def recommend(state: State, user_id: str, k: int | None) -> Served:
    """The rendered response for a validated request (`k` within 1..max_k, or None: the default),
    its exposure queued for the log. Shared by the route above and the fast lane.

    With `inline_store_reads` the store is read on the event loop, which saves a thread hop per
    request: a networked store (Redis) is awaited without blocking the loop, an in-process SQLite
    read takes less than the hop. Otherwise the read runs in the thread pool.
    Raises `StoreError` when the store cannot be read.
    """
    settings = state.settings
    recommender = state.recommender
    k = settings.default_k if k is None else k
    request_id = os.urandom(16).hex()  # as random as uuid4().hex, at a fifth of its cost
    if not settings.inline_store_reads:
        served = await run_in_threadpool(recommender.recommend, user_id, k, request_id)
    elif recommender.reads_async:
        served = await recommender.recommend_async(user_id, k, request_id)
    else:
        served = recommender.recommend(user_id, k, request_id)
    if settings.log_exposures and served.article_ids:
        state.exposures.append(user_id, served.article_ids, served.served_at_us, request_id)
    return served
