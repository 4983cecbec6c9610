"""Named errors of the coordinator, all in this module.

``main.py`` maps each family to an HTTP status in one place (its exception handlers), with
the body ``{"detail": "<message>"}``; routes, dependencies and services raise these and never
``HTTPException``.
"""

from __future__ import annotations

from typing import Any


class AptfleetError(Exception):
    """Base of every coordinator error."""


class NotFoundError(AptfleetError, LookupError):
    """A run, device or other row does not exist (HTTP 404)."""


class AuthenticationError(AptfleetError):
    """The request carries no valid bearer token (HTTP 401, ``WWW-Authenticate: Bearer``)."""


class PermissionDeniedError(AptfleetError):
    """The request's token lacks the role the action needs (HTTP 403)."""


class TooManyAttemptsError(AptfleetError):
    """Too many failed authentications from one client address (HTTP 429, ``Retry-After``).

    Parameters
    ----------
    retry_after : int
        Whole seconds until the address may try again.
    """

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"Too many failed authentication attempts from this address; try "
            f"again in {retry_after} s."
        )
        self.retry_after = retry_after


class NotConfiguredError(AptfleetError):
    """The coordinator is not set up for what the request asks (HTTP 501).

    For example a model converter for ``format=torch``.
    """


class ConflictError(AptfleetError):
    """The request conflicts with the stored state (HTTP 409)."""


class DuplicateRoundError(ConflictError, ValueError):
    """A round was recorded twice for the same run; nothing of the second copy is stored."""


class RunStateError(ConflictError, ValueError):
    """A run status change that its current status forbids, e.g. stopping a finished run."""


class RoundRecordError(AptfleetError, ValueError):
    """A ``RoundReport`` is inconsistent (e.g. the same node listed twice)."""


class PolicyNotSeededError(AptfleetError, RuntimeError):
    """The policies table is empty: the database was not migrated to head."""


class LaunchError(AptfleetError, RuntimeError):
    """The run launcher failed to start or stop a run (HTTP 503)."""


class RunStopped(AptfleetError, RuntimeError):
    """The run was stopped or finished elsewhere; its job must end without recording."""


class ResumeError(AptfleetError, RuntimeError):
    """Stored rounds and checkpoints of a run disagree; it cannot be resumed safely."""


class PolicyUpdateError(AptfleetError, ValueError):
    """A policy update is invalid (HTTP 422).

    Parameters
    ----------
    loc : tuple[str, ...]
        Path of the offending field inside the request body, e.g. ``("t_max",)`` or
        ``("overrides", "mcu", "bits_max")``.
    message : str
        Full-sentence reason naming the field and value.
    value : Any (default: None)
        The offending value.
    """

    def __init__(self, loc: tuple[str, ...], message: str, value: Any = None) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message
        self.value = value


class CsrfError(AptfleetError):
    """A dashboard form POST that is cross-site or lacks its CSRF token.

    Answered with a 403 page, rendered by the dashboard itself.
    """


class BodyTooLargeError(AptfleetError):
    """A request body over ``APTFLEET_MAX_BODY_BYTES`` (HTTP 413).

    Answered by the body-reading middleware before the app sees the request.
    """


class InvalidQueryError(AptfleetError, ValueError):
    """A query parameter the schema cannot check is invalid, e.g. a cursor (HTTP 422).

    Parameters
    ----------
    loc : tuple[str, ...]
        The parameter, e.g. ``("cursor",)``.
    message : str
        Full-sentence reason naming the parameter and value.
    value : Any (default: None)
        The offending value.
    """

    def __init__(self, loc: tuple[str, ...], message: str, value: Any = None) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message
        self.value = value
