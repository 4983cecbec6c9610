"""The console's action forms: their fields, their CSRF check and who may submit them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import Depends, Request

from server.coordinator.dashboard.auth import Form, Viewer, check_session_csrf
from server.coordinator.exceptions import CsrfError, PermissionDeniedError

#: Fields a console form may carry (the policy editor has the most, about 15).
_MAX_FIELDS = 64


@dataclass(frozen=True)
class Fields:
    """The fields of a submitted form, first value of each name."""

    values: dict[str, str]

    def get(self, name: str, default: str = "") -> str:
        """The field's value (``default`` when absent)."""
        return self.values.get(name, default)


async def read_fields(request: Request) -> Fields:
    """The ``application/x-www-form-urlencoded`` body (bad or oversized -> no fields)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    try:
        parsed = parse_qs(body, keep_blank_values=True, max_num_fields=_MAX_FIELDS)
    except ValueError:
        parsed = {}
    return Fields({name: values[0] for name, values in parsed.items()})


FieldsDep = Annotated[Fields, Depends(read_fields)]


def check_action(request: Request, viewer: Viewer, fields: Fields, *, admin: bool = False) -> None:
    """Raise unless a session form is same-origin, carries its CSRF token, and the role fits.

    Raises
    ------
    CsrfError
        Cross-site, without a session, or without the session's CSRF token.
    PermissionDeniedError
        ``admin`` is required and the viewer is an operator.
    """
    form = Form(token="", next="/", csrf_token=fields.get("csrf_token"))
    check_session_csrf(request, form)
    if viewer.csrf_token is None:
        raise CsrfError("Console actions need a signed-in browser session.")
    if admin and viewer.role != "admin":
        raise PermissionDeniedError(
            f"This action needs the admin role; '{viewer.name}' has role '{viewer.role}'."
        )
