"""Dashboard sign-in: a server-side session in a cookie, and CSRF checks on every form.

A browser cannot attach ``Authorization`` headers to page loads, so the sign-in form takes
an API token (``aptfleet token create --role operator``), checks it and opens a
server-side session (``crud.create_session``). The cookie holds only the random session id,
never the token: it is useless as a bearer token, and the database keeps only its digest.
The session dies at sign-out, after ``APTFLEET_SESSION_MAX_AGE_S``, and with its token
(revoked or expired).

Every form POST is checked twice against cross-site requests: the ``Origin`` (or
``Referer``) must be this site, and the form must carry the synchronizer token of the
session (``core.security.session_csrf_token``); the sign-in form, shown before a session
exists, carries a random token that must match a short-lived HttpOnly cookie.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import Depends, Request, Response, status
from fastapi.responses import RedirectResponse
from fastapi.security import HTTPBearer
from fastapi.security.http import HTTPAuthorizationCredentials

from server.coordinator import crud
from server.coordinator.api.deps import AuthThrottleDep, SessionDep, client_address
from server.coordinator.core.security import secrets_equal, session_csrf_token
from server.coordinator.exceptions import (
    AuthenticationError,
    CsrfError,
    TooManyAttemptsError,
)
from server.coordinator.services.authentication import authenticate

#: Cookie of the server-side session (renamed from ``aptfleet_dashboard``, which held the
#: raw token: such old cookies are simply ignored).
COOKIE_NAME = "aptfleet_session"
#: Cookie of the sign-in form's CSRF token (double submit, before any session exists).
LOGIN_CSRF_COOKIE = "aptfleet_login_csrf"
#: Seconds a sign-in form stays usable.
LOGIN_CSRF_MAX_AGE_S = 3600
#: Only dashboard pages may be a post-login target (no open redirect to other sites).
_NEXT_PATTERN = re.compile(
    r"/(runs/([0-9]{1,10}|new)|\?run=[0-9]{1,10}|devices(/[0-9]{1,10})?|policy|actions|cost-model"
    r"|compare(\?run=[0-9]{1,10}(&run=[0-9]{1,10}){0,9})?)?"
)
_bearer = HTTPBearer(auto_error=False)


@dataclass(frozen=True)
class Viewer:
    """Who reads a page: the token's label and role, and the session's CSRF token.

    ``csrf_token`` is None when the page was read with a bearer header (no session, so no
    sign-out form).
    """

    name: str
    role: str
    csrf_token: str | None


@dataclass(frozen=True)
class Form:
    """Fields of a dashboard form: the token (sign-in only), the return page, the CSRF token."""

    token: str
    next: str
    csrf_token: str


def safe_next(value: str | None) -> str:
    """``value`` if it is a dashboard page path, else ``/``."""
    return value if value and _NEXT_PATTERN.fullmatch(value) else "/"


def get_viewer(
    request: Request,
    session: SessionDep,
    throttle: AuthThrottleDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Viewer | None:
    """The viewer of the session cookie or of a bearer header; None if neither is valid.

    The header lets scripts (and curl) read the pages with the same tokens as the API; a bad
    header counts as a failed authentication, and raises ``TooManyAttemptsError`` when the
    address failed too often.
    """
    if credentials is not None:
        try:
            token = authenticate(
                session=session,
                secret=credentials.credentials,
                address=client_address(request),
                throttle=throttle,
            )
        except AuthenticationError:
            return None
        return Viewer(name=token.name, role=token.role, csrf_token=None)
    session_id = request.cookies.get(COOKIE_NAME)
    if not session_id:
        return None
    row = crud.session_token(session=session, session_id=session_id)
    if row is None:
        return None
    return Viewer(name=row.name, role=row.role, csrf_token=session_csrf_token(session_id))


ViewerDep = Annotated[Viewer | None, Depends(get_viewer)]


async def read_form(request: Request) -> Form:
    """The ``application/x-www-form-urlencoded`` body of a dashboard form (missing -> empty)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    try:
        fields = parse_qs(body, max_num_fields=8)
    except ValueError:
        fields = {}

    def field(name: str, default: str = "") -> str:
        return (fields.get(name) or [default])[0]

    return Form(
        token=field("token").strip(),
        next=safe_next(field("next", "/")),
        csrf_token=field("csrf_token"),
    )


FormDep = Annotated[Form, Depends(read_form)]


def check_same_origin(request: Request) -> None:
    """Raise ``CsrfError`` unless the request's ``Origin`` (or ``Referer``) is this site.

    A request with neither header (curl, scripts) passes this check; the CSRF token still
    guards it. ``Origin: null`` (sandboxed or privacy-redirected contexts) is refused.
    """
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer")
        if not referer:
            return
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    own = f"{request.url.scheme}://{request.url.netloc}"
    if origin.lower() != own.lower():
        raise CsrfError(f"Cross-site form submission refused: origin {origin!r} is not {own!r}.")


def check_session_csrf(request: Request, form: Form) -> None:
    """Raise ``CsrfError`` unless ``form`` carries the CSRF token of the request's session."""
    check_same_origin(request)
    session_id = request.cookies.get(COOKIE_NAME, "")
    if not session_id or not secrets_equal(form.csrf_token, session_csrf_token(session_id)):
        raise CsrfError(
            "The form's CSRF token is missing or does not belong to this "
            "session; reload the page and submit again."
        )


def check_login_csrf(request: Request, form: Form) -> None:
    """Raise ``CsrfError`` unless the sign-in ``form`` carries its cookie's CSRF token."""
    check_same_origin(request)
    if not secrets_equal(form.csrf_token, request.cookies.get(LOGIN_CSRF_COOKIE, "")):
        raise CsrfError(
            "The sign-in form's CSRF token is missing or stale; reload the "
            "sign-in page and submit again."
        )


def sign_in(request: Request, session: SessionDep, throttle: AuthThrottleDep, form: Form) -> str:
    """Check the submitted token and open a session for it; return the session id.

    Raises ``AuthenticationError`` (with the reason) or ``TooManyAttemptsError``; an empty
    token counts as a failed attempt too.
    """
    if not form.token:
        address = client_address(request)
        retry_after = throttle.retry_after(address)
        if retry_after is not None:
            raise TooManyAttemptsError(retry_after)
        throttle.record_failure(address)
        raise AuthenticationError("Enter an API token.")
    token = authenticate(
        session=session, secret=form.token, address=client_address(request), throttle=throttle
    )
    max_age = timedelta(seconds=request.app.state.settings.SESSION_MAX_AGE_S)
    session_id = crud.create_session(session=session, token=token, max_age=max_age)
    session.commit()
    return session_id


def sign_out(request: Request, session: SessionDep) -> None:
    """End the request's session (if any) server-side."""
    session_id = request.cookies.get(COOKIE_NAME)
    if session_id:
        crud.delete_session(session=session, session_id=session_id)
        session.commit()


def login_redirect(request: Request) -> RedirectResponse:
    """303 to the login page, which returns to the requested page after sign-in.

    A cookie whose session ended (sign-out elsewhere, expiry, revoked token) is deleted on
    the way.
    """
    target = request.url.path
    if request.url.query:
        target = f"{target}?{request.url.query}"
    query = {"next": safe_next(target)}
    if request.cookies.get(COOKIE_NAME):
        query["expired"] = "1"
    response = RedirectResponse(f"/login?{urlencode(query)}", status_code=status.HTTP_303_SEE_OTHER)
    if request.cookies.get(COOKIE_NAME):
        clear_session_cookie(response)
    return response


def _secure(request: Request) -> bool:
    """Whether cookies get ``Secure``: the request came over HTTPS, as seen by the app.

    Behind a TLS-terminating proxy, run uvicorn with ``--proxy-headers`` so that the app sees it.
    """
    return request.url.scheme == "https"


def set_session_cookie(request: Request, response: Response, session_id: str) -> None:
    """Store ``session_id`` in the HttpOnly, SameSite=Strict (Secure on HTTPS) cookie."""
    max_age = request.app.state.settings.SESSION_MAX_AGE_S
    response.set_cookie(
        COOKIE_NAME,
        session_id,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


def clear_session_cookie(response: Response) -> None:
    """Delete the session cookie."""
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")


def set_login_csrf_cookie(request: Request, response: Response, csrf_token: str) -> None:
    """Store the sign-in form's CSRF token in its HttpOnly, SameSite=Strict cookie."""
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        csrf_token,
        max_age=LOGIN_CSRF_MAX_AGE_S,
        path="/login",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


def clear_login_csrf_cookie(response: Response) -> None:
    """Delete the sign-in form's CSRF cookie (it is single-use)."""
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login", httponly=True, samesite="strict")
