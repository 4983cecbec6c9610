"""Signing in to the dashboard the way a browser does: load the form, post it back."""

from __future__ import annotations

import re

import httpx
from fastapi.testclient import TestClient

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(html: str) -> str:
    """The CSRF token of the first form of ``html``."""
    match = _CSRF.search(html)
    assert match is not None, "the page has no form with a CSRF token"
    return match[1]


def sign_in(
    client: TestClient | httpx.Client, token: str, next_path: str = "/", **headers: str
) -> httpx.Response:
    """GET /login (its CSRF cookie and token), then POST the form; the 303 or error page."""
    form = client.get("/login")
    return client.post(
        "/login",
        data={"token": token, "next": next_path, "csrf_token": csrf_token(form.text)},
        headers=headers,
        follow_redirects=False,
    )
