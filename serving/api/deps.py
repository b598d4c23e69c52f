"""Route dependencies (`Annotated[..., Depends(...)]`); the app factory puts the objects on `app.state`.

They are `async` because they only look things up: FastAPI runs a plain `def` dependency in the
thread pool, a hop per dependency per request."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from serving.core.config import Settings
from serving.core.metrics import Metrics
from serving.core.store import Stores
from serving.services.batching import WindowBatcher
from serving.services.recommender import Recommender


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_stores(request: Request) -> Stores:
    return request.app.state.stores


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_recommender(request: Request) -> Recommender:
    return request.app.state.recommender


async def get_events(request: Request) -> WindowBatcher:
    return request.app.state.events


async def get_exposures(request: Request) -> WindowBatcher | None:
    return request.app.state.exposures


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoresDep = Annotated[Stores, Depends(get_stores)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RecommenderDep = Annotated[Recommender, Depends(get_recommender)]
EventsDep = Annotated[WindowBatcher, Depends(get_events)]
ExposuresDep = Annotated[WindowBatcher | None, Depends(get_exposures)]
