"""A pure-ASGI shortcut for the hottest request, `GET /v1/users/{user_id}/recommendations`.

FastAPI's middleware stack, routing and dependency resolution cost more CPU per request than
building the list does (bench/README.md has the profile). `NewsrecAPI.__call__` hands
well-formed requests for that one route to this lane before any of it runs; the lane answers with
the same `recommend` the FastAPI route uses, so both answer alike, and records the same request
metrics the metrics middleware would. Whatever it is not sure about (another method or path, a
malformed user id, a `k` that is not a plain number in 1..max_k, any other query parameter) goes
through FastAPI untouched, which keeps validation errors, redirects and the OpenAPI document
FastAPI's own. Lane requests skip FastAPI's native OpenTelemetry middleware too;
`NEWSREC_FAST_LANE=false` turns the lane off.
"""

from __future__ import annotations

import re
import time

from starlette.datastructures import State
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from newsrec_assets.resources.online_store import StoreError
from serving.api.routes.recommendations import ROUTE_PATH, recommend
from serving.core.errors import internal_error_response, store_error_response
from serving.models import ID_MAX_LENGTH, ID_PATTERN

_PREFIX, _SUFFIX = ROUTE_PATH.split("{user_id}")
# ID_PATTERN is anchored with ^...$; Python's `$` also matches before a final newline.
_USER_ID = re.compile(ID_PATTERN.removeprefix("^").removesuffix("$"))
_K_QUERY = re.compile(rb"k=([1-9][0-9]{0,3})")
_JSON = (b"content-type", b"application/json")


class RecommendationsFastLane:
    """Answers well-formed recommendation requests without FastAPI; see the module docstring."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.max_k = state.settings.max_k
        metrics = state.metrics
        self._requests = metrics.requests
        self._latency = metrics.latency.labels("GET", ROUTE_PATH)
        self._ok = metrics.requests.labels("GET", ROUTE_PATH, "200")

    def parse(self, scope: Scope) -> tuple[str, int | None] | None:
        """`(user_id, k)` of a request this lane answers; None for any other."""
        path: str = scope["path"]
        if scope["method"] != "GET" or not (path.startswith(_PREFIX) and path.endswith(_SUFFIX)):
            return None
        user_id = path[len(_PREFIX) : len(path) - len(_SUFFIX)]
        if len(user_id) > ID_MAX_LENGTH or _USER_ID.fullmatch(user_id) is None:
            return None
        query: bytes = scope["query_string"]
        if not query:
            return user_id, None
        match = _K_QUERY.fullmatch(query)
        if match is None:
            return None
        k = int(match.group(1))
        return (user_id, k) if k <= self.max_k else None

    async def answer(self, scope: Scope, receive: Receive, send: Send, user_id: str, k: int | None) -> None:
        """Serve one parsed request, with the route's error responses and request metrics."""
        start = time.perf_counter()
        try:
            served = await recommend(self.state, user_id, k)
        except StoreError as error:
            await self._respond(store_error_response(error, scope["path"]), scope, receive, send, start)
            return
        except Exception as error:
            await self._respond(internal_error_response(error, scope["path"]), scope, receive, send, start)
            return
        body = served.body
        headers = [
            _JSON,
            (b"content-length", b"%d" % len(body)),
            (b"x-request-id", served.request_id.encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self._latency.observe(time.perf_counter() - start)
        self._ok.inc()

    async def _respond(
        self, response: Response, scope: Scope, receive: Receive, send: Send, start: float
    ) -> None:
        await response(scope, receive, send)
        self._latency.observe(time.perf_counter() - start)
        self._requests.labels("GET", ROUTE_PATH, str(response.status_code)).inc()
