"""The FastAPI app: `create_app(settings)` builds one; `app` is the default for `uvicorn serving.main:app`.

The app reads only the online store (never Dagster, never the warehouse). SQLite is opened
read-only for lists; its log file (exposures, view counters) is written by the API.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from newsrec_assets.resources.landing import GCSLandingZone, LandingZone, LocalLandingZone
from newsrec_assets.resources.online_store import OnlineStore
from serving.api.fast_lane import RecommendationsFastLane
from serving.api.main import api_router
from serving.core.config import Settings
from serving.core.errors import install_error_handlers
from serving.core.metrics import Metrics, MetricsMiddleware
from serving.core.responses import OrjsonResponse
from serving.core.store import build_store
from serving.services.exposures import ExposureLogger, ProcessExposureLogger, ThreadExposureLogger
from serving.services.landing import LandingWriter
from serving.services.recommender import Recommender


def build_landing_zone(settings: Settings) -> LandingZone:
    """Where POST /v1/events lands change records."""
    if settings.landing_kind == "gcs":
        return GCSLandingZone(settings.landing_bucket, settings.landing_prefix, settings.gcp_project)
    return LocalLandingZone(settings.landing_dir)


class NewsrecAPI(FastAPI):
    """FastAPI, with the recommendation fast lane in front of its whole middleware stack."""

    fast_lane: RecommendationsFastLane | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lane = self.fast_lane
        if lane is not None and scope["type"] == "http":
            parsed = lane.parse(scope)
            if parsed is not None:
                await lane.answer(scope, receive, send, *parsed)
                return
        await super().__call__(scope, receive, send)


def build_exposure_logger(
    settings: Settings, store: OnlineStore, metrics: Metrics, owns_store: bool
) -> ExposureLogger:
    """A writer process for a store built from the settings; a store handed in is written to
    from a thread, since it cannot be reopened elsewhere."""
    if owns_store and settings.exposure_writer == "process":
        return ProcessExposureLogger(settings.model_dump_json().encode(), metrics)
    return ThreadExposureLogger(store, metrics)


def create_app(settings: Settings | None = None, store: OnlineStore | None = None) -> NewsrecAPI:
    """Build the app. A `store` passed in is used as is and left open on shutdown."""
    settings = settings or Settings()
    owns_store = store is None
    store = store if store is not None else build_store(settings)
    metrics = Metrics()
    exposures = build_exposure_logger(settings, store, metrics, owns_store)

    @asynccontextmanager
    async def lifespan(app: NewsrecAPI) -> AsyncIterator[None]:
        if settings.log_exposures:
            exposures.start()  # blocks until the writer is up: nothing is served before it returns
        # What exists at startup lives as long as the process: keep it out of the collector's
        # full passes, whose pauses would otherwise land on requests' tail latency.
        gc.collect()
        gc.freeze()
        yield
        app.state.recommender.close()
        exposures.close()
        if owns_store:
            store.close()

    app = NewsrecAPI(
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
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if settings.fast_lane:
        app.fast_lane = RecommendationsFastLane(app.state)
    return app


app = create_app()
