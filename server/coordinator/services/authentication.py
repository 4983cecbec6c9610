"""Authentication of a bearer secret: throttled per address, recording the token's use."""

from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from server.coordinator import crud
from server.coordinator.core.throttle import AuthFailureThrottle
from server.coordinator.exceptions import AuthenticationError, TooManyAttemptsError
from server.coordinator.tables import ApiToken

logger = logging.getLogger(__name__)


def check_throttle(throttle: AuthFailureThrottle, address: str) -> None:
    """Raise ``TooManyAttemptsError`` if ``address`` failed too often recently."""
    retry_after = throttle.retry_after(address)
    if retry_after is not None:
        raise TooManyAttemptsError(retry_after)


def authenticate(
    *, session: Session, secret: str, address: str, throttle: AuthFailureThrottle
) -> ApiToken:
    """The live token of ``secret``; every failure counts against ``address``.

    Parameters
    ----------
    session : Session
        The request's session; committed when the token's last use is recorded.
    secret : str
        The presented bearer token.
    address : str
        The client's address, the unit of throttling.
    throttle : AuthFailureThrottle
        The app's failure counts.

    Returns
    -------
    ApiToken
        The token row, neither revoked nor expired.

    Raises
    ------
    TooManyAttemptsError
        ``address`` failed too often within the window (checked before the secret, so a
        throttled client learns nothing about it).
    AuthenticationError
        Unknown, revoked or expired token, with the reason.
    """
    check_throttle(throttle, address)
    row = crud.find_token(session=session, token=secret)
    reason = "Invalid bearer token." if row is None else crud.token_refusal(row)
    if row is None or reason is not None:
        throttle.record_failure(address)
        raise AuthenticationError(reason)
    _record_use(session, row)
    return row


def _record_use(session: Session, row: ApiToken) -> None:
    """Write the token's last use, at most once a minute.

    A failed write never fails the request; it only leaves the previous time.
    """
    try:
        if crud.touch_token(session=session, row=row):
            session.commit()
    except SQLAlchemyError as exc:
        session.rollback()
        logger.warning("Could not record the last use of token %s: %s", row.id, type(exc).__name__)
