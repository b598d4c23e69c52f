"""The FastAPI app: `create_app(settings)` builds one; `app` is the default for `uvicorn serving.main:app`.

The app reads only the online store (never Dagster, never the warehouse). SQLite is opened
read-only for lists; its log file (exposures, view counters) is written by the API.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from newsrec_assets.resources.landing import GCSLandingZone, LandingZone, LocalLandingZone
from newsrec_assets.resources.online_store import OnlineStore, RedisOnlineStore, SQLiteOnlineStore
from serving.api.fast_lane import RecommendationsFastLane
from serving.api.main import api_router
from serving.core.config import Settings
from serving.core.errors import install_error_handlers
from serving.core.metrics import Metrics, MetricsMiddleware
from serving.core.responses import OrjsonResponse
from serving.services.exposures import ExposureLogger
from serving.services.landing import LandingWriter
from serving.services.recommender import Recommender


def build_store(settings: Settings) -> OnlineStore:
    """The online store the settings name, opened for serving."""
    if settings.store_backend == "redis":
        return RedisOnlineStore(
            settings.redis_url, prefix=settings.redis_prefix, socket_timeout=settings.redis_timeout_seconds
        )
    return SQLiteOnlineStore(
        settings.sqlite_path, read_only=True, busy_timeout_ms=settings.sqlite_busy_timeout_ms
    )


def build_landing_zone(settings: Settings) -> LandingZone:
    """Where POST /v1/events lands change records."""
    if settings.landing_kind == "gcs":
        return GCSLandingZone(settings.landing_bucket, settings.landing_prefix, settings.gcp_project)
    return LocalLandingZone(settings.landing_dir)


def create_app(settings: Settings | None = None, store: OnlineStore | None = None) -> FastAPI:
    """Build the app. A `store` passed in is used as is and left open on shutdown."""
    settings = settings or Settings()
    owns_store = store is None
    store = store if store is not None else build_store(settings)
    metrics = Metrics()
    exposures = ExposureLogger(store, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # What exists at startup lives as long as the process: keep it out of the collector's
        # full passes, whose pauses would otherwise land on requests' tail latency.
        gc.collect()
        gc.freeze()
        yield
        exposures.close()
        if owns_store:
            store.close()

    app = FastAPI(
        title="newsrec",
        summary="Near-real-time news recommendations, served from the online store.",
        version="0.1.0",
        default_response_class=OrjsonResponse,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.metrics = metrics
    app.state.recommender = Recommender(store, settings, metrics)
    app.state.exposures = exposures
    app.state.landing = LandingWriter(build_landing_zone(settings))
    install_error_handlers(app)
    app.include_router(api_router)
    if settings.fast_lane:
        app.add_middleware(RecommendationsFastLane, api=app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # added last: outermost, so it sees both
    return app


app = create_app()
