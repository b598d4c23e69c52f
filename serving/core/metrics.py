"""Prometheus metrics of one app instance, in its own registry (so several apps can coexist).

Requests are counted and timed by `MetricsMiddleware`, a plain ASGI middleware, labelled by the
matched route template (never the raw path, so user ids do not explode the label cardinality),
until the last response byte is handed to the server.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

T = TypeVar("T")


class Metrics:
    """The app's collectors."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "newsrec_http_requests_total", "HTTP requests by route template, method and status.",
            ["method", "route", "status"], registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            "newsrec_http_request_duration_seconds", "HTTP request latency until the response is sent.",
            ["method", "route"], registry=registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )  # fmt: skip
        self.store_latency = Histogram(
            "newsrec_store_read_duration_seconds", "Online store call latency by operation.", ["operation"],
            registry=registry, buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5),
        )  # fmt: skip
        self.store_errors = Counter(
            "newsrec_store_errors_total", "Online store calls that failed, by operation.", ["operation"],
            registry=registry,
        )  # fmt: skip
        self.served = Counter(
            "newsrec_recommendations_served_total", "Recommendation responses by the layer of the list.",
            ["layer"], registry=registry,
        )  # fmt: skip
        self.fresh_merged = Counter(
            "newsrec_fresh_articles_served_total",
            "Articles published after their list was computed, merged in at read time and served.",
            registry=registry,
        )
        self.events = Counter(
            "newsrec_view_events_total",
            "View events accepted by POST /v1/events (landed).",
            registry=registry,
        )
        self.exposures_dropped = Counter(
            "newsrec_exposures_dropped_total",
            "Served lists not logged as impressions: the queue was full or the landing zone failed.",
            registry=registry,
        )
        # Labelled children, bound once (the label values are bounded: operations, route templates).
        layers = ("batch", "speed", "cold_start")
        self.served_by_layer = {layer: self.served.labels(layer) for layer in layers}
        self._store_children: dict[str, tuple[Any, Any]] = {}
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def _store_call(self, operation: str) -> tuple[Any, Any]:
        """The (errors, latency) children of an operation, looked up once: `labels()` takes a lock
        and checks the label values on every call."""
        children = self._store_children.get(operation)
        if children is None:
            children = self._store_children[operation] = (
                self.store_errors.labels(operation),
                self.store_latency.labels(operation),
            )
        return children

    def timed(self, operation: str, call: Callable[..., T], *args: Any) -> T:
        """`call(*args)`, a store call, timed and counted when it fails."""
        errors, latency = self._store_call(operation)
        start = time.perf_counter()
        try:
            return call(*args)
        except Exception:
            errors.inc()
            raise
        finally:
            latency.observe(time.perf_counter() - start)

    async def timed_async(self, operation: str, awaitable: Awaitable[T]) -> T:
        """`timed` for an awaitable store call."""
        errors, latency = self._store_call(operation)
        start = time.perf_counter()
        try:
            return await awaitable
        except Exception:
            errors.inc()
            raise
        finally:
            latency.observe(time.perf_counter() - start)

    def request_children(self, method: str, route: str, status: int) -> tuple[Any, Any]:
        """The (requests, latency) children of a method, route template and status, looked up once."""
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
        return children


class MetricsMiddleware:
    """Count and time every HTTP request by route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status, finished = time.perf_counter(), 500, None

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
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            requests, latency = self.metrics.request_children(scope["method"], route, status)
            requests.inc()
            latency.observe((finished or time.perf_counter()) - start)
