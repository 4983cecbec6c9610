"""HTML answers of the console: headers, refusals, not-found pages, ids from URLs."""

from __future__ import annotations

from fastapi import status
from fastapi.responses import HTMLResponse

from server.coordinator.api.deps import INT32_MAX
from server.coordinator.dashboard import pages
from server.coordinator.dashboard.auth import Viewer
from server.coordinator.dashboard.markup import Markup

#: Pages load the same-origin stylesheet and, on live pages, the same-origin polling
#: script; no inline script or style, no frame, no remote resource.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "script-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: browsers then send the real Origin on the forms' POSTs
    # (no-referrer makes it "null"), which the CSRF check compares with this site
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def html(document: Markup, status_code: int = status.HTTP_200_OK) -> HTMLResponse:
    """``document`` with the console's headers."""
    return HTMLResponse(document, status_code=status_code, headers=HEADERS)


def refused(message: str, viewer: Viewer | None = None) -> HTMLResponse:
    """403 page for a form POST that failed its CSRF or role checks."""
    return html(
        pages.error_page(title="Request refused", message=message, viewer=viewer),
        status.HTTP_403_FORBIDDEN,
    )


def failed(title: str, message: str, viewer: Viewer, status_code: int) -> HTMLResponse:
    """An error page with ``status_code`` (409 for a run in the wrong state, 503, ...)."""
    return html(pages.error_page(title=title, message=message, viewer=viewer), status_code)


def not_found(what: str, value: str, viewer: Viewer | None) -> HTMLResponse:
    """404 page: ``There is no run '12'.``."""
    return html(
        pages.error_page(
            title=f"{what.capitalize()} not found",
            message=f"There is no {what} {value!r}.",
            viewer=viewer,
        ),
        status.HTTP_404_NOT_FOUND,
    )


def parse_id(value: str | None) -> int | None:
    """An id from a URL, or None when it cannot name a row (so the page answers 404)."""
    if value is None or not value.isdigit() or len(value) > 10:
        return None
    parsed = int(value)
    return parsed if 1 <= parsed <= INT32_MAX else None
