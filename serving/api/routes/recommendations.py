"""`GET /v1/users/{user_id}/recommendations`: a user's top-k list, read from the online store."""

import os
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from serving.api.deps import ExposuresDep, RecommenderDep
from serving.models import ID_MAX_LENGTH, ID_PATTERN, ErrorResponse, RecommendationsResponse
from serving.services.landing import Exposure

UserIdPath = Annotated[
    str, Path(pattern=ID_PATTERN, min_length=1, max_length=ID_MAX_LENGTH, description="user id, e.g. u000042")
]


def router(default_k: int, max_k: int) -> APIRouter:
    """The route, its `k` bounds (configuration) in the OpenAPI document as they are enforced."""
    routes = APIRouter(prefix="/v1/users", tags=["recommendations"])

    @routes.get(
        "/{user_id}/recommendations",
        response_model=RecommendationsResponse,
        responses={422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
    )
    async def get_recommendations(
        user_id: UserIdPath,
        response: Response,
        recommender: RecommenderDep,
        exposures: ExposuresDep,
        k: Annotated[int, Query(ge=1, le=max_k, description="list length")] = default_k,
    ) -> dict[str, Any]:
        """The user's ranked list with article metadata, scores and provenance.

        Articles published after the list was computed are merged in at read time. Unknown users
        get the cold-start list (layer `cold_start`). What was served is logged as impressions,
        whose `impression_id` is this response's `request_id`.
        """
        request_id = os.urandom(16).hex()
        body = await recommender.recommend(user_id, k, request_id)
        response.headers["X-Request-ID"] = request_id
        if exposures is not None and body["items"]:
            article_ids = [item["article_id"] for item in body["items"]]
            exposures.offer(Exposure(request_id, user_id, article_ids, body["served_at"]))
        return body

    return routes
