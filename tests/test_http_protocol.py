"""The coalescing HTTP protocol: one write per response, nothing lost, reordered or delayed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from serving.core.http_protocol import (
    CoalescingH11Protocol,
    CoalescingHttpToolsProtocol,
)

BODY = b'{"items":[1,2,3]}'
REQUEST = b"GET /v1/users/u1/recommendations HTTP/1.1\r\nHost: test\r\n\r\n"


class RecordingTransport(asyncio.Transport):
    """What a protocol wrote, call by call."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"
        if data:  # an empty write sends nothing (h11 ends each response with one)
            self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


async def answer(scope, receive, send) -> None:  # noqa: ANN001 - the ASGI signature
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


async def stream(scope, receive, send) -> None:  # noqa: ANN001
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    for part in (b"one", b"two"):
        await send({"type": "http.response.body", "body": part, "more_body": True})
        await asyncio.sleep(0.01)  # the loop moves on: what was written must go out now
    await send({"type": "http.response.body", "body": b"three"})


async def answer_and_close(scope, receive, send) -> None:  # noqa: ANN001
    headers = [(b"content-length", b"%d" % len(BODY)), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


def serve_one(
    protocol_class: type,
    app: Callable,
    requests: bytes = REQUEST,
    passes: int = 20,
    transport: RecordingTransport | None = None,
) -> RecordingTransport:
    """Feed `requests` to a protocol instance and run the loop until it has answered."""
    transport = transport or RecordingTransport()

    async def run() -> RecordingTransport:
        config = Config(app=app, lifespan="off", proxy_headers=False, log_level="warning")
        config.load()
        protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
        protocol.connection_made(transport)
        protocol.data_received(requests)
        deadline = time.monotonic() + 5
        while not (protocol.cycle and protocol.cycle.response_complete) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        for _ in range(passes):
            await asyncio.sleep(0)
        protocol.connection_lost(None)
        return transport

    return asyncio.run(run())


@pytest.mark.parametrize("protocol_class", [CoalescingHttpToolsProtocol, CoalescingH11Protocol])
def test_a_response_goes_out_in_one_write(protocol_class: type) -> None:
    transport = serve_one(protocol_class, answer)
    assert len(transport.writes) == 1
    head, _, body = transport.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"content-length: %d" % len(BODY) in head.lower()
    assert body == BODY


@pytest.mark.parametrize("protocol_class", [CoalescingHttpToolsProtocol, CoalescingH11Protocol])
def test_the_response_goes_out_when_its_body_is_written_not_later(protocol_class: type) -> None:
    transport = RecordingTransport()
    written_when_body_sent: list[int] = []

    async def answer_then_work(scope, receive, send) -> None:  # noqa: ANN001
        await answer(scope, receive, send)
        # Still in the same loop pass: what the stock protocol had sent by now is sent.
        written_when_body_sent.append(len(transport.writes))

    serve_one(protocol_class, answer_then_work, transport=transport)
    assert written_when_body_sent == [1]
    assert len(transport.writes) == 1


@pytest.mark.parametrize("stock_class", [HttpToolsProtocol, H11Protocol])
def test_uvicorn_itself_writes_headers_and_body_apart(stock_class: type) -> None:
    """Why the wrapper exists: if a uvicorn upgrade made this fail, the wrapper could go."""
    transport = serve_one(stock_class, answer)
    assert len(transport.writes) == 2
    assert transport.writes[1] == BODY


@pytest.mark.parametrize("protocol_class", [CoalescingHttpToolsProtocol, CoalescingH11Protocol])
def test_a_streamed_response_goes_out_as_it_is_written(protocol_class: type) -> None:
    transport = serve_one(protocol_class, stream)
    # Each pause of the app flushes what it wrote before it: headers with the first chunk,
    # then one write per chunk, the last with the terminating chunk.
    assert len(transport.writes) == 3
    wire = b"".join(transport.writes)
    assert wire.index(b"one") < wire.index(b"two") < wire.index(b"three")
    assert wire.endswith(b"0\r\n\r\n")


@pytest.mark.parametrize("protocol_class", [CoalescingHttpToolsProtocol, CoalescingH11Protocol])
def test_closing_sends_what_is_held_first(protocol_class: type) -> None:
    transport = serve_one(protocol_class, answer_and_close)
    assert transport.closed
    assert len(transport.writes) == 1
    assert transport.writes[0].endswith(BODY)


@pytest.mark.parametrize("protocol_class", [CoalescingHttpToolsProtocol, CoalescingH11Protocol])
def test_pipelined_requests_are_answered_in_order(protocol_class: type) -> None:
    transport = serve_one(protocol_class, answer, REQUEST * 3, passes=50)
    assert len(transport.writes) == 3  # one per response
    wire = b"".join(transport.writes)
    assert wire.count(b"HTTP/1.1 200 OK") == 3
    assert wire.count(BODY) == 3
