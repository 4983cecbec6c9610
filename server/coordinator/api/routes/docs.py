"""Interactive API docs (/docs, Swagger UI; /redoc, ReDoc) from files installed with the package.

An offline fleet sees them too, and no page loads anything from another origin.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from server.coordinator.exceptions import NotFoundError

router = APIRouter(prefix="", tags=["docs"], include_in_schema=False)

#: Swagger UI 5 and ReDoc 2, as shipped by the ``fastapi-offline`` wheel (pinned in
#: pyproject's coordinator extra); only their files are used, not its app factory.
_ASSETS_PACKAGE = "fastapi_offline"
_MEDIA_TYPES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
#: Scripts come from this origin only (the init script too: nothing inline). Both UIs set
#: inline styles; ReDoc runs a worker from a blob: URL.
_DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; worker-src blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
_PAGE_HEADERS = {"Content-Security-Policy": _DOCS_CSP, "Cache-Control": "no-store"}
_ASSET_HEADERS = {"Cache-Control": "public, max-age=86400"}

_SWAGGER_INIT = """window.ui = SwaggerUIBundle({
  url: document.getElementById("swagger-ui").dataset.openapi,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
"""


def _page(title: str, body: str, head: str = "") -> HTMLResponse:
    return HTMLResponse(
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        f'<title>{title}</title><link rel="icon" href="/docs/assets/favicon.png">{head}'
        f"</head><body>{body}</body></html>",
        headers=_PAGE_HEADERS,
    )


@router.get("/docs")
def read_swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI for /openapi.json."""
    return _page(
        "aptfleet coordinator - API docs",
        f'<div id="swagger-ui" data-openapi="{request.app.openapi_url}"></div>'
        '<script src="/docs/assets/swagger-ui-bundle.js"></script>'
        '<script src="/docs/assets/swagger-init.js"></script>',
        head='<link rel="stylesheet" href="/docs/assets/swagger-ui.css">',
    )


@router.get("/redoc")
def read_redoc(request: Request) -> HTMLResponse:
    """ReDoc for /openapi.json."""
    return _page(
        "aptfleet coordinator - API reference",
        f'<redoc spec-url="{request.app.openapi_url}"></redoc>'
        '<script src="/docs/assets/redoc.standalone.js"></script>',
    )


@router.get("/docs/assets/{name}")
def read_docs_asset(name: str) -> Response:
    """One of the packaged docs files (404 for any other name)."""
    if name == "swagger-init.js":
        return Response(_SWAGGER_INIT, media_type="text/javascript", headers=_ASSET_HEADERS)
    media_type = _MEDIA_TYPES.get(name)
    if media_type is None:
        raise NotFoundError(f"No docs asset named {name!r}.")
    return Response(_asset(name), media_type=media_type, headers=_ASSET_HEADERS)


@cache
def _asset(name: str) -> bytes:
    return (files(_ASSETS_PACKAGE) / "static" / name).read_bytes()
