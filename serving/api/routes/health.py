"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from newsrec_assets.resources.online_store.base import StoreError
from serving.api.deps import MetricsDep, StoresDep
from serving.core.errors import error_body
from serving.models import ErrorResponse, Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, response_model_exclude_none=True)
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Health,
    response_model_exclude_none=True,
    responses={503: {"model": ErrorResponse}},
)
def readyz(stores: StoresDep, metrics: MetricsDep) -> dict | Response:
    """Ready when the online store answers and holds a model version."""
    try:
        model_version = metrics.timed("get_model_version", stores.lists.get_model_version)
        generation = metrics.timed("current_generation", stores.lists.current_generation)
    except StoreError as error:
        return JSONResponse(error_body("store_unavailable", str(error)), status_code=503)
    if model_version is None:
        return JSONResponse(
            error_body("not_ready", "the online store has no model version yet"), status_code=503
        )
    return {
        "status": "ready",
        "model_version": model_version,
        "generation": generation and generation.generation,
    }


@router.get("/metrics", include_in_schema=False)
def metrics_endpoint(metrics: MetricsDep) -> Response:
    """Prometheus exposition of this process's metrics."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
