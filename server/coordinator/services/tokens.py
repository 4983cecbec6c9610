"""Token changes made through the API: revocation, recorded with who revoked."""

from __future__ import annotations

from sqlalchemy.orm import Session

from server.coordinator import crud
from server.coordinator.services.audit import Actor, record
from server.coordinator.tables import ApiToken


def revoke_token(*, session: Session, actor: Actor, token_id: int) -> ApiToken:
    """Revoke token ``token_id`` (its sessions end), record ``actor``'s action, commit.

    The action row names the token by id, label and role; its secret is not stored anywhere.

    Raises
    ------
    NotFoundError
        If no token has id ``token_id``.
    """
    token = crud.revoke_token(session=session, token_id=token_id)
    record(
        session=session,
        actor=actor,
        action="token-revoke",
        target=f"token:{token.id}",
        detail=f"'{token.name}' ({token.role})",
    )
    session.commit()
    return token
