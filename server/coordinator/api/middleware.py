"""ASGI middleware that limits requests and measures their latency.

Limits: requests open per client address, body size and arrival time, and requests admitted at once.
"""

from __future__ import annotations

import asyncio
import json
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.coordinator.core.metrics import Metrics
from server.coordinator.exceptions import BodyTooLargeError


async def _refuse(
    send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer ``{"detail": detail}`` and ask the server to close the connection.

    Closing is needed because the rest of the request (a body still arriving) is not read.
    """
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ClientLimitMiddleware:
    """Answer 429 to a client address that already has ``limit`` requests open.

    A request counts from its head to its response, while its body is still arriving
    too, so one address cannot hold every connection and task of the process. The address
    is ASGI's ``scope["client"]``: behind a proxy listed in uvicorn's
    ``--forwarded-allow-ips`` that is the ``X-Forwarded-For`` client, not the proxy.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit={limit!r} must be >= 1.")
        self.app = app
        self.limit = limit
        self._open: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse with 429 a request from an address already at its limit; pass others on."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        host = client[0] if client else ""
        if self._open.get(host, 0) >= self.limit:
            await _refuse(
                send,
                429,
                f"Client address {host!r} already has {self.limit} "
                "requests open (APTFLEET_MAX_REQUESTS_PER_CLIENT).",
                [(b"retry-after", b"1")],
            )
            return
        self._open[host] = self._open.get(host, 0) + 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._open[host] -= 1
            if not self._open[host]:
                del self._open[host]


class BodyReadMiddleware:
    """Read the whole request body before the app sees it, within size and time limits.

    Answers 413 over ``max_bytes`` and 408 when the body has not arrived within ``timeout`` seconds.

    The size limit holds for chunked uploads too, not only for an honest Content-Length.
    Reading here, outside ``ConcurrencyLimitMiddleware``, means a slow or stalled body
    never holds an admission slot: only requests ready to be handled wait for one.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout={timeout!r} must be a number of seconds > 0.")
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with its body already read, or answer 413 or 408."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        try:
            if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                raise BodyTooLargeError
            async with asyncio.timeout(self.timeout):
                messages = await self._read(receive)
        except BodyTooLargeError:
            await _refuse(
                send,
                413,
                f"Request body exceeds the limit of {self.max_bytes} "
                "bytes (APTFLEET_MAX_BODY_BYTES).",
            )
            return
        except TimeoutError:
            await _refuse(
                send,
                408,
                f"Request body not received within {self.timeout:g} s (APTFLEET_BODY_TIMEOUT).",
            )
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> list[Message]:
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                raise BodyTooLargeError
            if not message.get("more_body", False):
                return messages


class ConcurrencyLimitMiddleware:
    """Admit at most ``limit`` HTTP requests at a time; the rest wait on the event loop.

    Sync routes and dependencies run on a thread pool and keep their database session
    (and its pooled connection) across thread hops. With more requests in flight than
    connections, every thread can end up waiting for a connection while every holder
    waits for a thread, until the pool's timeout. Keeping in-flight requests below the
    connection pool size makes that impossible; waiting requests hold neither. Place it
    inside ``BodyReadMiddleware``: a request is admitted only once its body is complete.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit={limit!r} must be >= 1.")
        self.app = app
        self._slots = asyncio.Semaphore(limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on once an admission slot is free; non-HTTP scopes pass at once."""
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
        """Pass the request on and observe its latency by method, route template and status."""
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
