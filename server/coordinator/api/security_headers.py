"""ASGI middleware adding the browser security headers to every HTTP response."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: JSON and text answers load nothing, may not be framed and need no base URL. Pages with
#: content of their own (the dashboard, /docs) set a policy of their own, which is kept.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

_ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_HSTS = "max-age=31536000"


class SecurityHeadersMiddleware:
    """Add security headers to every HTTP answer.

    They are ``nosniff``, ``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer``, a
    Content-Security-Policy, ``Cache-Control: no-store`` and, behind TLS, HSTS.

    A header the route set itself wins: the dashboard and /docs set their own CSP, and
    the packaged /docs assets may be cached. Everything else is ``no-store``, so no proxy
    or browser cache keeps an authenticated answer.

    Parameters
    ----------
    tls : bool (default: False)
        Clients reach the service over HTTPS (``APTFLEET_TLS``): add
        ``Strict-Transport-Security``. Never over plain HTTP, where browsers ignore it
        and a later switch to TLS would be pinned by accident.
    """

    def __init__(self, app: ASGIApp, tls: bool = False) -> None:
        self.app = app
        self.defaults = {**_ALWAYS, "Content-Security-Policy": API_CSP, "Cache-Control": "no-store"}
        if tls:
            self.defaults["Strict-Transport-Security"] = _HSTS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on and add the default headers the answer does not set."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.defaults.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
