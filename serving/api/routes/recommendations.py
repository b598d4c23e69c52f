"""`GET /v1/users/{user_id}/recommendations` (a user's list) and `GET /v1/articles/{article_id}/related`."""

import os
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, HTTPException, Path, Query, Response

from serving.models import (
    ID_MAX_LENGTH,
    ID_PATTERN,
    ErrorResponse,
    RecommendationsResponse,
    RelatedResponse,
)
from serving.services.recommender import Recommender


def _id(example: str) -> Any:
    return Path(pattern=ID_PATTERN, min_length=1, max_length=ID_MAX_LENGTH, description=f"e.g. {example}")


def _label(what: str) -> Any:
    return Query(min_length=1, max_length=ID_MAX_LENGTH, description=f"only items of this {what}")


def _json(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """The body as JSON, returned as a `Response` so that FastAPI neither validates nor serialises
    it again: the route builds it to its `response_model` (the OpenAPI document; the tests and
    schemathesis hold responses to it), and that second pass was an eighth of a request's CPU.
    Times as pydantic writes them (`...Z`)."""
    return Response(
        orjson.dumps(body, option=orjson.OPT_UTC_Z), media_type="application/json", headers=headers
    )


def install(app: FastAPI, recommender: Recommender, default_k: int, max_k: int) -> None:
    """Add the routes to `app`, their `k` and `offset` bounds (configuration) in the OpenAPI
    document as enforced.

    They are the app's own routes rather than an included `APIRouter`, and they take the app's
    recommender from here rather than from a dependency: on this, the hottest path, FastAPI's
    include wrapper (matched twice per request) and a dependency solved per request cost ~8 % of
    its CPU."""
    errors = {code: {"model": ErrorResponse} for code in (422, 503)}

    @app.get(
        "/v1/users/{user_id}/recommendations",
        tags=["recommendations"],
        response_model=RecommendationsResponse,
        responses=errors,
    )
    async def get_recommendations(
        user_id: Annotated[str, _id("u000042")],
        k: Annotated[int, Query(ge=1, le=max_k, description="list length")] = default_k,
        offset: Annotated[int, Query(ge=0, le=max_k, description="items to skip (paging)")] = 0,
        category: Annotated[str | None, _label("category")] = None,
        subcategory: Annotated[str | None, _label("subcategory")] = None,
    ) -> Response:
        """The user's ranked list with article metadata, scores and provenance.

        Articles published after the list was computed are merged in at read time. Unknown users
        get the cold-start list (layer `cold_start`). The user's A/B variant (provenance) decides
        the ranker settings. What was served is logged as impressions, whose `impression_id` is
        this response's `request_id`.
        """
        request_id = os.urandom(16).hex()
        body = await recommender.recommend(
            user_id, k, request_id, offset, category=category, subcategory=subcategory
        )
        return _json(body, {"X-Request-ID": request_id})

    @app.get(
        "/v1/articles/{article_id}/related",
        tags=["recommendations"],
        response_model=RelatedResponse,
        responses={code: {"model": ErrorResponse} for code in (404, 422, 503)},
    )
    async def get_related(
        article_id: Annotated[str, _id("a000123")],
        k: Annotated[int, Query(ge=1, le=max_k, description="how many")] = default_k,
    ) -> Response:
        """Live articles nearest to this one by the cosine of their vectors (the current model's).

        Only articles of the fresh window (`NEWSREC_FRESH_WINDOW_HOURS`) have vectors in the
        serving cache; any other article is a 404.
        """
        body = await recommender.related(article_id, k)
        if body is None:
            raise HTTPException(404, f"no vector for article {article_id} in the recent window")
        return _json(body)
