"""The inference server's Prometheus metrics, and the middleware that measures every request."""

from __future__ import annotations

import time
from collections.abc import Hashable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

from mlaas4hep_dask._http import error as _error

__all__ = ["Measured", "Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mlaas4hep_requests", "Requests", ["route", "model", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "mlaas4hep_request_seconds", "Request latency", ["route", "model"], registry=self.registry
        )
        self.events = Counter(
            "mlaas4hep_predicted_events", "Events scored", ["model"], registry=self.registry
        )
        self.queued = Histogram(
            "mlaas4hep_queue_seconds", "Time a request waited for its batch", ["model"],
            buckets=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0), registry=self.registry,
        )  # fmt: skip
        self.batch = Histogram(
            "mlaas4hep_batch_events", "Events in the batch a request was scored in", ["model"],
            buckets=tuple(2.0**k for k in range(0, 17, 2)), registry=self.registry,
        )  # fmt: skip
        self.in_flight = Gauge(
            "mlaas4hep_in_flight_events", "Events queued or being scored", ["model"], registry=self.registry
        )

    def observe(self, key: Hashable, events: int, queued: float) -> None:
        model = str(key[0]) if isinstance(key, tuple) else str(key)
        self.queued.labels(model).observe(queued)
        self.batch.labels(model).observe(events)


class Measured:
    """Refuses bodies over the limit (413) and counts every request (a plain ASGI middleware:
    Starlette's ``BaseHTTPMiddleware`` costs more than scoring an event)."""

    def __init__(self, app: Any, metrics: Metrics, max_body: int) -> None:
        self.app, self.metrics, self.max_body = app, metrics, max_body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        size = dict(scope["headers"]).get(b"content-length", b"")
        if size.isdigit() and int(size) > self.max_body:
            limit = f"request body of {int(size)} bytes is over the limit of {self.max_body}"
            await _error(413, limit)(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def sent(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            model = scope.get("path_params", {}).get("name", "")
            self.metrics.requests.labels(path, model, str(status)).inc()
            self.metrics.latency.labels(path, model).observe(time.perf_counter() - start)
