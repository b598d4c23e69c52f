"""The Redis read path for an asyncio server: one pipelined connection per event loop.

A blocking read on the event loop holds it for the whole round trip, and on a machine whose
cores Redis shares with the API, that wait (Redis scheduled, the script run, the reply back)
can exceed the request's own CPU time: the loop then saturates below the rate its CPU could
serve. `AsyncListReader` writes each read as soon as it is asked for and resolves it when its
reply arrives, on one connection, so requests overlap their waits; replies come back in order
(RESP), so a FIFO of futures pairs them with their requests.

It speaks RESP itself (hiredis parses the replies) and sends one command: `EVALSHA` of the store's
read script, so what it returns is exactly what `RedisOnlineStore.get_recommendations` reads.
Plain TCP only (host, port, db, username/password); other connection kinds (TLS, unix socket)
make `RedisOnlineStore.async_reads` return None and serving falls back to blocking reads.

Failures: a connection that cannot be opened, breaks, or leaves a reply outstanding longer than
`timeout_s` fails the pending reads with `StoreUnavailable` and is closed (a late reply would
pair with the wrong request); the next read opens a new one. A Redis that lost its scripts
(restart, SCRIPT FLUSH) gets the script again from the synchronous client and the read is retried.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import hiredis

from newsrec_assets.resources.online_store.base import (
    StoreError,
    StoreUnavailable,
    UserRecommendations,
    decode_record,
)


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def command(*parts: bytes) -> bytes:
    """One RESP command (an array of bulk strings)."""
    return b"*%d\r\n" % len(parts) + b"".join(_bulk(part) for part in parts)


class _Replies(asyncio.Protocol):
    """Pairs replies with the futures of the commands written, in order."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if not self.waiting:  # nothing asked for it: the stream can no longer be trusted
                self.fail(StoreError("redis: a reply that no read was waiting for"))
                return
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(StoreUnavailable(f"redis: connection lost ({exc or 'closed by the server'})"))

    def fail(self, error: StoreError) -> None:
        self.lost = True
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)
        if self.transport is not None and not self.loop.is_closed():
            self.transport.abort()


class AsyncListReader:
    """`await reader.get_recommendations(user_id)`, as `RedisOnlineStore.get_recommendations`.

    Bound to the event loop it is first used on; used from another loop, it opens a connection
    there (the old one is dropped).

    Args:
        host, port, db, username, password: where Redis is.
        script: the read script's source; `sha` its SHA-1.
        keys, args: the script's keys and the arguments that follow the user id.
        load_script: loads the script into Redis (synchronously) and returns its SHA-1.
        timeout_s: the longest a reply may be outstanding.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        db: int,
        username: str | None,
        password: str | None,
        sha: str,
        keys: tuple[str, ...],
        args: tuple[str, ...],
        load_script: Callable[[], str],
        timeout_s: float,
    ) -> None:
        self.host, self.port, self.db = host, port, db
        self.username, self.password = username, password
        self.timeout_s = timeout_s
        self._load_script = load_script
        self._keys = tuple(key.encode() for key in keys)
        self._args = tuple(arg.encode() for arg in args)
        self._set_sha(sha)
        self._replies: _Replies | None = None
        self._connecting: asyncio.Future[_Replies] | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    def _set_sha(self, sha: str) -> None:
        # Everything before and after the user id, packed once.
        head = [b"EVALSHA", sha.encode(), b"%d" % len(self._keys), *self._keys]
        self._head = b"*%d\r\n" % (len(head) + 1 + len(self._args)) + b"".join(_bulk(p) for p in head)
        self._tail = b"".join(_bulk(arg) for arg in self._args)

    async def get_recommendations(self, user_id: str) -> UserRecommendations | None:
        blob = await self._read(user_id)
        return None if blob is None else decode_record(user_id, blob)

    async def _read(self, user_id: str) -> bytes | None:
        reply = await self._ask(self._head + _bulk(user_id.encode()) + self._tail)
        if isinstance(reply, hiredis.ReplyError):
            if not str(reply).startswith("NOSCRIPT"):
                raise StoreError(f"redis: {reply}")
            self._set_sha(await asyncio.get_running_loop().run_in_executor(None, self._load_script))
            reply = await self._ask(self._head + _bulk(user_id.encode()) + self._tail)
            if isinstance(reply, hiredis.ReplyError):
                raise StoreError(f"redis: {reply}")
        return reply

    async def _ask(self, packed: bytes) -> Any:
        replies = self._replies
        loop = asyncio.get_running_loop()
        if replies is None or replies.lost or replies.loop is not loop:
            replies = await self._connect()
        future = loop.create_future()
        replies.waiting.append((future, time.monotonic() + self.timeout_s))
        replies.transport.write(packed)  # type: ignore[union-attr]
        return await future

    async def _connect(self) -> _Replies:
        if self._connecting is not None:  # another request is opening it: share
            return await asyncio.shield(self._connecting)
        loop = asyncio.get_running_loop()
        self._connecting = loop.create_future()
        try:
            replies = await asyncio.wait_for(self._open(loop), self.timeout_s)
        except (OSError, TimeoutError, StoreError) as error:
            failure = error if isinstance(error, StoreError) else StoreUnavailable(f"redis: {error!r}")
            self._connecting.set_exception(failure)
            self._connecting.exception()  # retrieved: no "never retrieved" warning if unshared
            raise failure from error
        except BaseException:  # cancelled (the client went away): release whoever shares it
            self._connecting.set_exception(StoreUnavailable("redis: connecting was cancelled"))
            self._connecting.exception()
            raise
        finally:
            connecting, self._connecting = self._connecting, None
        connecting.set_result(replies)
        previous, self._replies = self._replies, replies
        if previous is not None and not previous.lost:
            previous.fail(StoreUnavailable("redis: connection replaced"))
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog = loop.call_later(min(self.timeout_s, 0.1), self._check_timeouts)
        return replies

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Replies:
        _, replies = await loop.create_connection(_Replies, self.host, self.port)
        handshake = []
        if self.password is not None:
            auth = [b"AUTH", self.password.encode()]
            if self.username is not None:
                auth.insert(1, self.username.encode())
            handshake.append(command(*auth))
        if self.db:
            handshake.append(command(b"SELECT", b"%d" % self.db))
        for packed in handshake:
            future = loop.create_future()
            replies.waiting.append((future, time.monotonic() + self.timeout_s))
            replies.transport.write(packed)  # type: ignore[union-attr]
            reply = await future
            if isinstance(reply, hiredis.ReplyError):
                replies.fail(StoreUnavailable(f"redis: {reply}"))
                raise StoreUnavailable(f"redis: {reply}")
        return replies

    def _check_timeouts(self) -> None:
        """Fail the connection if its oldest read has waited longer than `timeout_s`."""
        replies = self._replies
        loop = asyncio.get_running_loop()
        if replies is not None and not replies.lost and replies.waiting:
            _, deadline = replies.waiting[0]
            if time.monotonic() > deadline:
                replies.fail(StoreUnavailable(f"redis: no reply within {self.timeout_s} s"))
        self._watchdog = loop.call_later(min(self.timeout_s, 0.1), self._check_timeouts)

    def close(self) -> None:
        """Drop the connection (also after its event loop has closed)."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._replies is not None:
            self._replies.fail(StoreUnavailable("redis: reader closed"))
            self._replies = None
