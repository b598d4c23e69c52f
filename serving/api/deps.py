"""Route dependencies (`Annotated[..., Depends(...)]`); the app factory puts the objects on `app.state`."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, status

from newsrec_assets.resources.online_store import OnlineStore
from serving.core.config import Settings
from serving.core.metrics import Metrics
from serving.services.landing import LandingWriter


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_store(request: Request) -> OnlineStore:
    return request.app.state.store


async def get_landing(request: Request) -> LandingWriter:
    return request.app.state.landing


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[OnlineStore, Depends(get_store)]
LandingDep = Annotated[LandingWriter, Depends(get_landing)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


async def require_api_key(
    settings: SettingsDep,
    x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None,
) -> str:
    """The caller's API key, if it is one of the configured keys; 401 otherwise."""
    if x_api_key:
        presented = x_api_key.encode()
        # Compare against every key, in constant time per key.
        matches = [hmac.compare_digest(presented, key.encode()) for key in settings.api_keys]
        if any(matches):
            return x_api_key
    raise HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="a valid X-API-Key header is required",
        headers={"WWW-Authenticate": "ApiKey"},
    )


ApiKeyDep = Annotated[str, Depends(require_api_key)]
