"""Dashboard sign-in: an API token kept in an HttpOnly, SameSite=Strict cookie."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import parse_qs, urlencode

from fastapi import Depends, Request, Response, status
from fastapi.responses import RedirectResponse
from fastapi.security import HTTPBearer
from fastapi.security.http import HTTPAuthorizationCredentials

from server.coordinator import crud
from server.coordinator.api.deps import SessionDep
from server.coordinator.tables import ApiToken

# A browser cannot attach ``Authorization`` headers to page loads, so the login form takes
# a token (``aptfleet server token create``), checks it and keeps it in a cookie that only
# the dashboard's read-only pages accept. The REST API accepts bearer headers only, so the
# cookie can never drive a write (nor be replayed cross-site: SameSite=Strict). Each page
# load re-checks the token: revoking it signs the browser out at once.
COOKIE_NAME = "aptfleet_dashboard"
#: How long a browser stays signed in; the token itself may live longer.
COOKIE_MAX_AGE_S = 12 * 3600
#: Only dashboard pages may be a post-login target (no open redirect to other sites).
_NEXT_PATTERN = re.compile(r"/(runs/[0-9]{1,10}|\?run=[0-9]{1,10})?")
_bearer = HTTPBearer(auto_error=False)


@dataclass(frozen=True)
class LoginForm:
    """Fields of the login form: the token and the page to return to."""

    token: str
    next: str


def safe_next(value: str | None) -> str:
    """``value`` if it is a dashboard page path, else ``/``."""
    return value if value and _NEXT_PATTERN.fullmatch(value) else "/"


def get_viewer(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiToken | None:
    """The live token of the session cookie or of a bearer header; None if neither is valid.

    The header lets scripts (and curl) read the pages with the same tokens as the API.
    """
    token = credentials.credentials if credentials is not None else None
    token = token or request.cookies.get(COOKIE_NAME)
    if not token:
        return None
    return crud.authenticate_token(session=session, token=token)


ViewerDep = Annotated[ApiToken | None, Depends(get_viewer)]


async def read_login_form(request: Request) -> LoginForm:
    """The ``application/x-www-form-urlencoded`` body of the login form (missing -> empty)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    try:
        fields = parse_qs(body, max_num_fields=8)
    except ValueError:
        fields = {}
    return LoginForm(token=(fields.get("token") or [""])[0].strip(),
                     next=safe_next((fields.get("next") or ["/"])[0]))


LoginFormDep = Annotated[LoginForm, Depends(read_login_form)]


def login_redirect(request: Request) -> RedirectResponse:
    """303 to the login page, which returns to the requested page after sign-in.

    A cookie that no longer authenticates (revoked token) is deleted on the way.
    """
    target = request.url.path
    if request.url.query:
        target = f"{target}?{request.url.query}"
    query = {"next": safe_next(target)}
    if request.cookies.get(COOKIE_NAME):
        query["expired"] = "1"
    response = RedirectResponse(f"/login?{urlencode(query)}",
                                status_code=status.HTTP_303_SEE_OTHER)
    if request.cookies.get(COOKIE_NAME):
        clear_login_cookie(response)
    return response


def set_login_cookie(request: Request, response: Response, token: str) -> None:
    """Store ``token`` in the HttpOnly, SameSite=Strict session cookie.

    The cookie is ``Secure`` when the request came over HTTPS (as seen by the app; behind
    a TLS-terminating proxy run uvicorn with ``--proxy-headers``).
    """
    response.set_cookie(COOKIE_NAME, token, max_age=COOKIE_MAX_AGE_S, path="/",
                        httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def clear_login_cookie(response: Response) -> None:
    """Delete the session cookie."""
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
