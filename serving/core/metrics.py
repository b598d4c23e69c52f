"""Prometheus metrics of one app instance, in its own registry (so several apps can coexist).

Request metrics are recorded by `MetricsMiddleware`, a plain ASGI middleware (cheaper than
`BaseHTTPMiddleware`), and by the recommendation fast lane for the requests it answers, labelled by
the matched route template, never the raw path, so that user ids do not explode the label
cardinality. Latency is measured until the last response byte is
handed to the server, so background work after the response (the exposure log) is not counted.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

T = TypeVar("T")

_HTTP_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class Metrics:
    """The app's collectors."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "newsrec_http_requests_total",
            "HTTP requests by route template, method and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "newsrec_http_request_duration_seconds",
            "HTTP request latency until the response is sent, by route template.",
            ["method", "route"],
            buckets=_HTTP_BUCKETS,
            registry=self.registry,
        )
        self.store_latency = Histogram(
            "newsrec_store_read_duration_seconds",
            "Online store call latency by operation.",
            ["operation"],
            buckets=_STORE_BUCKETS,
            registry=self.registry,
        )
        self.store_errors = Counter(
            "newsrec_store_errors_total",
            "Online store calls that failed, by operation.",
            ["operation"],
            registry=self.registry,
        )
        self.served = Counter(
            "newsrec_recommendations_served_total",
            "Recommendation responses by the layer of the list served (batch/speed/cold_start).",
            ["layer"],
            registry=self.registry,
        )
        self.fresh_merged = Counter(
            "newsrec_fresh_articles_served_total",
            "Articles published after their list was computed, merged in at read time and served.",
            registry=self.registry,
        )
        self.events = Counter(
            "newsrec_view_events_total",
            "View events accepted by POST /v1/events and written to the landing zone.",
            registry=self.registry,
        )

        self._store_timers: dict[str, StoreTimer] = {}

    def store_timer(self, operation: str) -> StoreTimer:
        """The timer of one kind of store call (see `StoreTimer`), made once per operation."""
        timer = self._store_timers.get(operation)
        if timer is None:
            timer = self._store_timers[operation] = StoreTimer(
                self.store_latency.labels(operation), self.store_errors.labels(operation)
            )
        return timer


class StoreTimer:
    """`timer(store.method, *args)` calls it, observes its latency and counts it if it raises.

    The label children are resolved once, not per call, and a plain call costs less than a
    generator-based context manager: both matter on a path that runs thousands of times a second.
    """

    def __init__(self, latency: Any, errors: Any) -> None:
        self._latency = latency
        self._errors = errors

    async def wait(self, awaitable: Awaitable[T]) -> T:
        """Await a store call, timed the same way."""
        start = time.perf_counter()
        try:
            return await awaitable
        except Exception:
            self._errors.inc()
            raise
        finally:
            self._latency.observe(time.perf_counter() - start)

    def __call__(self, call: Callable[..., T], *args: Any) -> T:
        start = time.perf_counter()
        try:
            return call(*args)
        except Exception:
            self._errors.inc()
            raise
        finally:
            self._latency.observe(time.perf_counter() - start)


class MetricsMiddleware:
    """Count and time every HTTP request by route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        finished: float | None = None

        async def send_and_observe(message: Message) -> None:
            nonlocal status, finished
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = time.perf_counter()

        try:
            await self.app(scope, receive, send_and_observe)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            elapsed = (finished or time.perf_counter()) - start
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(elapsed)
