"""A JSON response rendered with orjson (FastAPI's own `ORJSONResponse` is deprecated)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class OrjsonResponse(JSONResponse):
    """Renders prebuilt dicts with orjson: no pydantic validation on the hot path."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
