"""One JSON error shape for every failure: `{"error": {"code", "message", "details"?}}`.

Bad input is a 4xx with that body, never a 5xx; an unreachable or failing online store is a
503 (with `Retry-After`); anything else is a 500 with the same shape.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from newsrec_assets.resources.online_store import StoreError, StoreUnavailable
from serving.core.responses import OrjsonResponse

logger = logging.getLogger(__name__)


def error_body(code: str, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def _status_code_name(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "http_error"


def validation_details(errors: Any) -> list[dict[str, Any]]:
    """Pydantic errors reduced to JSON-safe fields (their `ctx` may hold exception objects)."""
    return [
        {
            "loc": [str(part) for part in error.get("loc", ())],
            "msg": error.get("msg", ""),
            "type": error.get("type", ""),
        }
        for error in errors
    ]


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    return OrjsonResponse(
        error_body("validation_error", "the request is invalid", validation_details(exc.errors())),
        status_code=422,
    )


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    message = exc.detail if isinstance(exc.detail, str) else _status_code_name(exc.status_code)
    return OrjsonResponse(
        error_body(_status_code_name(exc.status_code), message),
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


async def _store_error(request: Request, exc: StoreError) -> Response:
    return store_error_response(exc, request.url.path)


def store_error_response(exc: StoreError, path: str) -> Response:
    """The 503 for a failing online store (logged)."""
    code = "store_unavailable" if isinstance(exc, StoreUnavailable) else "store_error"
    logger.warning("online store failure on %s: %s", path, exc)
    return OrjsonResponse(
        error_body(code, "the online store is unavailable, retry shortly"),
        status_code=503,
        headers={"Retry-After": "1"},
    )


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    return internal_error_response(exc, request.url.path)


def internal_error_response(exc: Exception, path: str) -> Response:
    """The 500 for anything unexpected (logged with its traceback)."""
    logger.exception("unhandled error on %s", path, exc_info=exc)
    return OrjsonResponse(error_body("internal_error", "internal server error"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(StoreError, _store_error)
    app.add_exception_handler(Exception, _unexpected_error)
