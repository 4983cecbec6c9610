"""ASGI middleware: request body size limit, admission limit and request latency metrics."""

from __future__ import annotations

import asyncio
import json
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.coordinator.core.metrics import Metrics


class BodySizeLimitMiddleware:
    """Answer 413 when a request body exceeds ``max_bytes``.

    The body is read (at most ``max_bytes`` of it) before the app sees it, so the limit
    holds for chunked uploads too, not only for an honest Content-Length.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._reject(send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send: Send) -> None:
        body = json.dumps({"detail": f"Request body exceeds the limit of {self.max_bytes} "
                                     "bytes (APTFLEET_MAX_BODY_BYTES)."}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class ConcurrencyLimitMiddleware:
    """Admit at most ``limit`` HTTP requests at a time; the rest wait on the event loop.

    Sync routes and dependencies run on a thread pool and keep their database session
    (and its pooled connection) across thread hops. With more requests in flight than
    connections, every thread can end up waiting for a connection while every holder
    waits for a thread, until the pool's timeout. Keeping in-flight requests below the
    connection pool size makes that impossible; waiting requests hold neither.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit={limit!r} must be >= 1.")
        self.app = app
        self._slots = asyncio.Semaphore(limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        async with self._slots:
            await self.app(scope, receive, send)


class RequestMetricsMiddleware:
    """Observe every HTTP request's latency, labelled by route template (not raw path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.request_latency.labels(
                scope["method"], _route_label(scope), str(status)
            ).observe(time.perf_counter() - start)


def _route_label(scope: Scope) -> str:
    """The matched route's full path template, e.g. ``/api/v1/runs/{run_id}``.

    FastAPI puts the route in ``scope["route"]`` with its path relative to the prefix the
    router was included under; that prefix is literal, so it is the leading part of the
    request path. Unmatched paths share one label to keep the metric's cardinality bounded.
    """
    template = getattr(scope.get("route"), "path", None)
    if not template:
        return "unmatched"
    parts = scope["path"].split("/")
    return "/".join(parts[: max(1, len(parts) - template.count("/"))]) + template
