"""Route dependencies (`Annotated[..., Depends(...)]`); the app factory puts the objects on `app.state`.

They are `async` because they only look things up: FastAPI runs a plain `def` dependency in the
thread pool, a hop per dependency per request."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from serving.core.config import Settings
from serving.core.metrics import Metrics
from serving.core.store import Stores
from serving.services.batching import WindowBatcher


def _state(name: str) -> Any:
    """A dependency returning `app.state.<name>`."""

    async def lookup(request: Request) -> Any:
        return getattr(request.app.state, name)

    lookup.__name__ = f"get_{name}"
    return Depends(lookup)


SettingsDep = Annotated[Settings, _state("settings")]
StoresDep = Annotated[Stores, _state("stores")]
MetricsDep = Annotated[Metrics, _state("metrics")]
EventsDep = Annotated[WindowBatcher, _state("events")]
