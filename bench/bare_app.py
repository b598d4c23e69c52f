"""The floor for the endpoint benchmark: a raw ASGI callable answering from an in-memory dict.

`uvicorn bench.bare_app:app` with the same settings as the real API. It answers
`GET /v1/users/{user_id}/recommendations` with a pre-rendered JSON body of the same shape and
about the same size as the real API's response for k=10 (ten items with metadata), looked up
in a dict keyed by user id (`NEWSREC_BENCH_BARE_USERS` users, `u0000000`...), and `GET /healthz`.
No framework, no validation, no store, no serialisation per request: what is left is uvicorn's
HTTP handling, which every real endpoint pays too.

With `NEWSREC_BENCH_BARE_CPU_US=N`, each recommendation request first spends N µs of the
worker's CPU doing nothing useful (timed on the thread's CPU clock, so being preempted does not
shorten it): the bare app made as costly as a real endpoint, with nothing else of one. The
endpoint benchmark runs it with the SQLite API's extra CPU per request, to tell how much of the
API's tail the CPU cost alone explains on the machine at hand.

With `NEWSREC_BENCH_BARE_FRAMEWORK=fastapi`, the same lookup answers from one FastAPI route (path
parameter, `Response` of the pre-rendered body): the floor of any FastAPI app here, to read the
API's capacity against.
"""

from __future__ import annotations

import os
import time

import orjson

_N_USERS = int(os.getenv("NEWSREC_BENCH_BARE_USERS", "1000000"))
_CPU_NS = round(float(os.getenv("NEWSREC_BENCH_BARE_CPU_US", "0")) * 1000)
_N_BODIES = 1000


def _body(index: int) -> bytes:
    items = [
        {
            "rank": rank + 1,
            "article_id": f"a{(index * 7 + rank * 13) % 5000 + 1:06d}",
            "title": "Striker penalty derby premier manager transfer season coach fans after victory",
            "category": "sports",
            "subcategory": "football",
            "published_at": "2026-11-20T05:12:44.123456Z",
            "url": None,
            "score": 3.25 - rank * 0.125,
            "source": "stored",
        }
        for rank in range(10)
    ]
    return orjson.dumps(
        {
            "user_id": f"u{index:07d}",
            "request_id": "0" * 32,
            "served_at": "2026-11-20T06:00:00.000000Z",
            "k": 10,
            "provenance": {
                "model_version": "naml-0123456789abcdef",
                "layer": "batch",
                "computed_at": "2026-11-20T05:50:00.000000Z",
                "watermark": "2026-11-20T05:49:00.000000Z",
                "fresh_merged": 0,
            },
            "items": items,
        }
    )


_BODIES = [_body(i) for i in range(_N_BODIES)]
_BY_USER: dict[str, bytes] = {f"u{i:07d}": _BODIES[i % _N_BODIES] for i in range(_N_USERS)}
_PREFIX, _SUFFIX = "/v1/users/", "/recommendations"
_NOT_FOUND = b'{"detail":"not found"}'


def spend_cpu(nanoseconds: int) -> None:
    """Busy the calling thread for `nanoseconds` of its own CPU time."""
    start = time.thread_time_ns()
    while time.thread_time_ns() - start < nanoseconds:
        pass


def _headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]


async def raw_app(scope, receive, send) -> None:  # noqa: ANN001 - the raw ASGI signature
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path = scope["path"]
    body = None
    if path.startswith(_PREFIX) and path.endswith(_SUFFIX):
        if _CPU_NS:
            spend_cpu(_CPU_NS)
        body = _BY_USER.get(path[len(_PREFIX) : -len(_SUFFIX)])
    elif path == "/healthz":
        body = b'{"status":"ok"}'
    status = 200 if body is not None else 404
    body = body if body is not None else _NOT_FOUND
    await send({"type": "http.response.start", "status": status, "headers": _headers(body)})
    await send({"type": "http.response.body", "body": body})


def fastapi_app():  # noqa: ANN201 - FastAPI is imported only when asked for
    """The same lookup behind one FastAPI route and no middleware."""
    from fastapi import FastAPI, Response

    framework = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @framework.get("/v1/users/{user_id}/recommendations")
    async def recommendations(user_id: str) -> Response:
        if _CPU_NS:
            spend_cpu(_CPU_NS)
        body = _BY_USER.get(user_id)
        if body is None:
            return Response(_NOT_FOUND, status_code=404, media_type="application/json")
        return Response(body, media_type="application/json")

    @framework.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return framework


app = fastapi_app() if os.getenv("NEWSREC_BENCH_BARE_FRAMEWORK") == "fastapi" else raw_app
