"""uvicorn's HTTP protocol with a deadline on the request head (request line and headers).

uvicorn times out only the idle time between two requests (``timeout_keep_alive``): once a
client has sent one byte of a request, nothing closes the connection until the head is
complete, so stalled heads pile up for ever. ASGI middleware cannot help, since the app
is called only after the head. This protocol closes a connection that has not completed
a request head within ``timeout`` seconds of connecting or of its previous response.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

logger = logging.getLogger(__name__)


class _HeaderDeadlineProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """``AutoHTTPProtocol`` (httptools, else h11) closing connections with a late head.

    Both uvicorn protocols create a new ``self.cycle`` when a request head is complete and
    call ``on_response_complete`` when its response is sent; the deadline is armed at
    connection and after every response, and fires only if no new cycle started since.
    """

    header_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._armed_cycle: object = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_deadline()

    def _arm_head_deadline(self) -> None:
        self._cancel_head_deadline()
        self._armed_cycle = self.cycle
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_deadline_passed)

    def _cancel_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_deadline_passed(self) -> None:
        self._head_timer = None
        if self.cycle is self._armed_cycle and not self.transport.is_closing():
            logger.info(
                "Closed a connection from %s: no complete request head within %s s "
                "(APTFLEET_HEADER_TIMEOUT).",
                _peer(self.client),
                self.header_timeout,
            )
            self.transport.close()


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "an unknown address"


def header_deadline_protocol(timeout: float) -> type[asyncio.Protocol]:
    """The HTTP protocol class for ``uvicorn.run(http=...)`` with a head deadline.

    Parameters
    ----------
    timeout : float
        Seconds a connection has to send a complete request head, from connecting or
        from the end of its previous response.

    Returns
    -------
    type[asyncio.Protocol]
        A subclass of uvicorn's ``AutoHTTPProtocol`` (httptools when installed, else h11).
    """
    if not timeout > 0:
        raise ValueError(f"timeout={timeout!r} must be a number of seconds > 0.")
    return type(
        "HeaderDeadlineProtocol", (_HeaderDeadlineProtocol,), {"header_timeout": float(timeout)}
    )
