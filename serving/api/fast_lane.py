"""A pure-ASGI shortcut for the hottest request, `GET /v1/users/{user_id}/recommendations`.

FastAPI's routing and dependency resolution cost more CPU per request than building the list
does (bench/README.md has the profile). This middleware answers well-formed requests for that one
route itself, with the `recommendations_response` the FastAPI route uses, so both answer alike.
Whatever it is not sure about (another method or path, a malformed user id, a `k` that is not
a plain number in 1..max_k, any other query parameter) goes to FastAPI untouched, which keeps
validation errors, redirects and the OpenAPI document FastAPI's own. `NEWSREC_FAST_LANE=false`
turns it off.
"""

from __future__ import annotations

import re

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from newsrec_assets.resources.online_store import StoreError
from serving.api.routes.recommendations import ROUTE_PATH, recommendations_response, router
from serving.core.errors import store_error_response
from serving.models import ID_MAX_LENGTH, ID_PATTERN

_PREFIX, _SUFFIX = ROUTE_PATH.split("{user_id}")
# ID_PATTERN is anchored with ^...$; Python's `$` also matches before a final newline.
_USER_ID = re.compile(ID_PATTERN.removeprefix("^").removesuffix("$"))
_K_QUERY = re.compile(rb"k=([1-9][0-9]{0,3})")


class RecommendationsFastLane:
    """Serves well-formed recommendation requests before FastAPI's router sees them."""

    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.api = api
        # The metrics middleware labels requests with the matched route's template.
        self.route = next(route for route in router.routes if getattr(route, "path", None) == ROUTE_PATH)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        user_id, k = self._parse(scope) if scope["type"] == "http" else (None, None)
        if user_id is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        try:
            response = await recommendations_response(self.api.state, user_id, k)
        except StoreError as error:
            response = store_error_response(error, scope["path"])
        await response(scope, receive, send)

    def _parse(self, scope: Scope) -> tuple[str | None, int | None]:
        """`(user_id, k)` of a request this lane can answer; `(None, None)` for any other."""
        path: str = scope["path"]
        if scope["method"] != "GET" or not (path.startswith(_PREFIX) and path.endswith(_SUFFIX)):
            return None, None
        user_id = path[len(_PREFIX) : len(path) - len(_SUFFIX)]
        if len(user_id) > ID_MAX_LENGTH or _USER_ID.fullmatch(user_id) is None:
            return None, None
        query: bytes = scope["query_string"]
        if not query:
            return user_id, None
        match = _K_QUERY.fullmatch(query)
        if match is None:
            return None, None
        k = int(match.group(1))
        return (user_id, k) if k <= self.api.state.settings.max_k else (None, None)
