"""API tokens: list and revoke (admin only). New tokens come from 'aptfleet token create'."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from server.coordinator import crud
from server.coordinator.api.deps import INT32_MAX, AdminToken, Cursor, Limit, SessionDep
from server.coordinator.schemas import Message, TokenPublic, TokensPublic
from server.coordinator.services.tokens import revoke_token as revoke

router = APIRouter(
    prefix="/tokens",
    tags=["tokens"],
    responses={403: {"model": Message, "description": "The token is not an admin token."}},
)

TokenId = Annotated[int, Path(ge=1, le=INT32_MAX)]


@router.get("", response_model=TokensPublic)
def read_tokens(
    session: SessionDep, _admin: AdminToken, cursor: Cursor = None, limit: Limit = 100
) -> TokensPublic:
    """One page of tokens with role, label, creation, expiry, last use and revocation.

    Secrets are shown once, by 'aptfleet token create --role admin|operator', and never
    again: neither they nor their digests are listed.
    """
    page = crud.page_tokens(session=session, cursor=cursor, limit=limit)
    return TokensPublic.model_validate(page.fields(), from_attributes=True)


@router.post("/{token_id}/revoke", response_model=TokenPublic, responses={404: {"model": Message}})
def revoke_token(session: SessionDep, admin: AdminToken, token_id: TokenId) -> TokenPublic:
    """Revoke a token: from now on it gets 401 and its dashboard sessions are ended.

    Revoking a revoked token is not an error; it stays revoked since its first revocation.
    Each call is recorded as a ``token-revoke`` action with the admin's name.
    """
    token = revoke(session=session, actor=admin, token_id=token_id)
    return TokenPublic.model_validate(token)
