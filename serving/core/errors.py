"""One JSON error shape for every failure: `{"error": {"code", "message", "details"?}}`.

Bad input is a 4xx with that body, never a 5xx; an unreachable or failing online store, or a
landing zone that cannot take an event, is a 503 (with `Retry-After`); anything else is a 500.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from newsrec_assets.resources.online_store.base import StoreError, StoreUnavailable
from serving.services.landing import LandingUnavailable

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
    return JSONResponse(
        error_body("validation_error", "the request is invalid", validation_details(exc.errors())),
        status_code=422,
    )


def http_error_body(status: int, message: str) -> dict[str, Any]:
    return error_body(_status_code_name(status), message)


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    message = exc.detail if isinstance(exc.detail, str) else _status_code_name(exc.status_code)
    return JSONResponse(
        http_error_body(exc.status_code, message), exc.status_code, getattr(exc, "headers", None)
    )


async def _unavailable(request: Request, exc: Exception) -> Response:
    """The 503 for a failing online store or landing zone (logged)."""
    if isinstance(exc, LandingUnavailable):
        code, what = "service_unavailable", "the landing zone is unavailable"
    else:
        code = "store_unavailable" if isinstance(exc, StoreUnavailable) else "store_error"
        what = "the online store is unavailable"
    logger.warning("%s on %s: %s", what, request.url.path, exc)
    return JSONResponse(
        error_body(code, f"{what}, retry shortly"), status_code=503, headers={"Retry-After": "1"}
    )


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s", request.url.path, exc_info=exc)
    return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(StoreError, _unavailable)
    app.add_exception_handler(LandingUnavailable, _unavailable)
    app.add_exception_handler(Exception, _unexpected_error)
