"""Request hygiene: a body limit, the API key checked before a body is read, security headers.

FastAPI parses a route's body before it runs the route's dependencies, so `KeyedRoute` checks the
key first (its routes declare the `X-API-Key` scheme for the OpenAPI document). The body limit is
ours because FastAPI's own `max_body_size` answers in plain text, outside the JSON error shape.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response, status
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.core.errors import http_error_body

api_key_scheme = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="one of the keys in `NEWSREC_API_KEYS`"
)


def check_api_key(request: Request) -> None:
    """Raise a 401 unless the request carries one of the configured keys (constant time per key)."""
    presented = request.headers.get("x-api-key", "").encode()
    keys = request.app.state.settings.api_keys
    if not presented or not any([hmac.compare_digest(presented, key.encode()) for key in keys]):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a valid X-API-Key header is required",
            {"WWW-Authenticate": "ApiKey"},
        )


class KeyedRoute(APIRoute):
    """A route that refuses a request without a valid API key before reading its body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def keyed_handler(request: Request) -> Response:
            check_api_key(request)
            return await handler(request)

        return keyed_handler


class BodyLimitMiddleware:
    """A 413 for a request body over `max_bytes`: declared, before it is read; otherwise when
    the reading passes the limit (raised from `receive`, so the route answers with the error)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"the request body exceeds {self.max_bytes} bytes"
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse(
                http_error_body(413, message), status_code=413, headers={"Connection": "close"}
            )
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            event = await receive()
            received += len(event.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, message)
            return event

        await self.app(scope, limited_receive, send)


_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
]


class SecurityHeadersMiddleware:
    """Adds the security headers to every response, and `Cache-Control: no-store` to API answers
    (per-user and per-moment); static assets under `cacheable_prefix` may be cached."""

    def __init__(self, app: ASGIApp, cacheable_prefix: str) -> None:
        self.app, self.cacheable_prefix = app, cacheable_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith(self.cacheable_prefix)
        cache = b"public, max-age=86400" if static else b"no-store"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS, (b"cache-control", cache)]
            await send(message)

        await self.app(scope, receive, send_with_headers)
