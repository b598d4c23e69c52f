"""uvicorn's HTTP/1.1 protocol, with each response's headers and body sent in one write.

uvicorn writes a response's status line and headers when the app sends `http.response.start`,
and the body when it sends `http.response.body`: two `send` system calls, two TCP segments, and,
when the client is quick, two wake-ups of the client. On loopback each write also runs the
receiver's side of TCP in the sender's system call. Measured on a uvicorn worker of the
recommendation API, those two writes were the largest single cost of a request (bench/README.md).

`CoalescingHttpToolsProtocol` and `CoalescingH11Protocol` are uvicorn's own protocols with their
transport wrapped in `CoalescingTransport`, which holds a write until the next one and sends the
two together: a response's headers go out with its body, at the moment the body is written (when
uvicorn would have sent the body alone). A write with no second one in the same event-loop pass
(a streamed chunk, a response without a body) goes out at the end of that pass.

`CoalescingHTTPProtocol` is the httptools one where httptools is installed, as uvicorn's own
"auto" picks: `uvicorn serving.main:app --http serving.core.http_protocol:CoalescingHTTPProtocol`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools not installed: only the h11 protocol is available
    HttpToolsProtocol = None


class CoalescingTransport(asyncio.Transport):
    """A transport that sends two writes of one event-loop pass as one.

    A write is held until the next write, which is then sent together with it at once, or until
    the end of the loop pass, whichever comes first: a response's headers go out with its body
    the moment the body is written, and nothing waits past the pass that wrote it. Everything but
    writing and closing goes to the wrapped transport. Closing (and `write_eof`) sends what is
    held first, so nothing written is lost or reordered; `abort` drops it, as the wrapped
    transport's `abort` drops its own buffer.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._flush_at_end_of_pass: asyncio.Handle | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if self._held is None:
            self._held = bytes(data)
            self._flush_at_end_of_pass = self._loop.call_soon(self.flush)
        else:
            self._held += data
            self.flush()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Send what is held now (at the second write, or at the end of the loop pass)."""
        held = self._take_held()
        # A connection that is gone takes nothing: the wrapped transport would only warn.
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def _take_held(self) -> bytes | None:
        held, self._held = self._held, None
        if held is not None:
            self._flush_at_end_of_pass.cancel()  # type: ignore[union-attr]
        return held

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._take_held()
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()


class CoalescingH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, writing through a `CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))


if HttpToolsProtocol is not None:

    class CoalescingHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol, writing through a `CoalescingTransport`."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(CoalescingTransport(transport, self.loop))

    CoalescingHTTPProtocol: type[asyncio.Protocol] = CoalescingHttpToolsProtocol
else:
    CoalescingHTTPProtocol = CoalescingH11Protocol
