"""The API router: versioned resources under `/v1`, health and metrics at the root.

Each resource router carries its full prefix (`/v1/...`) itself rather than getting it from an
enclosing router, so that the matched route's `path` is the full template; the metrics
middleware labels requests with it.
"""

from fastapi import APIRouter

from serving.api.routes import events, health, recommendations

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(recommendations.router)
api_router.include_router(events.router)
