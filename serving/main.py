"""The FastAPI app: `create_app(settings)` builds one; `app` is the default for `uvicorn serving.main:app`.

The app reads only the online store (never Dagster, never the warehouse) and writes only to the
landing zone (events and exposures, one object per short window).
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from serving.api.routes import docs, events, health, recommendations
from serving.core.config import Settings
from serving.core.errors import install_error_handlers
from serving.core.metrics import Metrics, MetricsMiddleware
from serving.core.security import BodyLimitMiddleware, SecurityHeadersMiddleware
from serving.core.store import open_reads, open_stores
from serving.services.batching import WindowBatcher
from serving.services.landing import EventLanding, ExposureLanding
from serving.services.recommender import Recommender


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app from `settings` (default: the environment)."""
    settings = settings or Settings()
    stores = open_stores(settings)
    metrics = Metrics()
    recommender = Recommender(stores, settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        recommender.reads = open_reads(settings, stores)
        # Events wait for their window's write, so their queue is bounded by the requests in flight.
        app.state.events = WindowBatcher(
            EventLanding(stores.landing), settings.events_window_seconds, 2**31, lambda n: None
        )
        if settings.log_exposures:
            exposure_landing = ExposureLanding(stores.landing)
            recommender.exposures = WindowBatcher(
                exposure_landing,
                settings.exposure_window_seconds,
                settings.exposure_queue_size,
                metrics.exposures_dropped.inc,
                prepare=exposure_landing.render,
            )
        batchers = [batcher for batcher in (app.state.events, recommender.exposures) if batcher is not None]
        for batcher in batchers:
            batcher.start()
        # What is alive now (modules, schemas, the app) lives as long as the app: frozen, a full
        # collection no longer walks it. It took 25 ms with it, a stall of every request then in
        # flight. Unfrozen at shutdown, so an app that stops (tests) leaves nothing uncollectable.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            for batcher in batchers:
                await batcher.close()
            await recommender.reads.close()
            stores.lists.close()
            stores.articles.close()

    app = FastAPI(
        title="newsrec",
        summary="Near-real-time news recommendations, served from the online store.",
        version="0.1.0",
        lifespan=lifespan,
        openapi_url="/openapi.json" if settings.api_docs else None,
        docs_url=None,  # served offline below
        redoc_url=None,
        redirect_slashes=False,  # a redirect would echo the Host header into Location
        # Metrics are Prometheus' (/metrics); FastAPI's OpenTelemetry hooks, unused, would look up
        # the global providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings, app.state.stores, app.state.metrics = settings, stores, metrics
    app.state.recommender = recommender
    install_error_handlers(app)
    # Matched in this order: the hot read routes first, as the app's own (see `install`).
    recommendations.install(app, recommender, settings.default_k, settings.max_k)
    app.include_router(health.router)
    app.include_router(events.router)
    if settings.api_docs:
        docs.install_offline_docs(app)
    if settings.demo_page:
        docs.install_demo_page(app)
    app.add_middleware(SecurityHeadersMiddleware, cacheable_prefix=docs.ASSETS)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


app = create_app()
