"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from newsrec_assets.resources.online_store import StoreError
from serving.api.deps import MetricsDep, StoreDep
from serving.core.errors import error_body
from serving.core.responses import OrjsonResponse
from serving.models import ErrorResponse, Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Response:
    """The process is alive."""
    return OrjsonResponse({"status": "ok"})


@router.get("/readyz", response_model=Health, responses={503: {"model": ErrorResponse}})
def readyz(store: StoreDep, metrics: MetricsDep) -> Response:
    """Ready when the online store answers and holds a model version."""
    try:
        metrics.store_timer("ping")(store.ping)
        model = metrics.store_timer("get_model_version")(store.get_model_version)
        generation = metrics.store_timer("current_generation")(store.current_generation)
    except StoreError as error:
        return OrjsonResponse(error_body("store_unavailable", str(error)), status_code=503)
    if model is None:
        return OrjsonResponse(
            error_body("not_ready", "the online store has no model version yet"), status_code=503
        )
    return OrjsonResponse(
        {
            "status": "ready",
            "model_version": model.version,
            "generation": None if generation is None else generation.generation,
        }
    )


@router.get("/metrics", include_in_schema=False)
def metrics_endpoint(metrics: MetricsDep) -> Response:
    """Prometheus exposition of this process's metrics."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
