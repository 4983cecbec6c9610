"""Token lifecycle over REST: list and revoke (admin only), expiry, last use."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.coordinator import crud
from server.coordinator.tables import ApiToken, utcnow


def _token_id(db: Session, token: str) -> int:
    row = crud.find_token(session=db, token=token)
    assert row is not None
    return row.id


def test_read_tokens_lists_every_token_without_secrets(
    client: TestClient, db: Session, admin_headers: dict[str, str]
) -> None:
    # Prepare
    expires_at = utcnow() + timedelta(days=30)
    operator = crud.create_token(session=db, role="operator", name="ci", expires_at=expires_at)
    db.commit()

    # Execute
    response = client.get("/api/v1/tokens", headers=admin_headers)

    # Assert
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    alice, ci = body["data"]
    assert (alice["name"], alice["role"], alice["status"]) == ("alice", "admin", "active")
    assert alice["expires_at"] is None and alice["last_used_at"] is not None
    assert (ci["name"], ci["role"], ci["revoked"], ci["last_used_at"]) == (
        "ci",
        "operator",
        False,
        None,
    )
    assert ci["expires_at"].startswith(expires_at.date().isoformat())
    assert set(ci) == {
        "id",
        "name",
        "role",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked",
        "revoked_at",
        "status",
    }
    admin_secret = admin_headers["Authorization"].removeprefix("Bearer ")
    for secret in (operator, admin_secret):
        assert secret not in response.text
        assert secret.removeprefix("aptf_") not in response.text


def test_read_tokens_operator_forbidden(
    client: TestClient, operator_headers: dict[str, str]
) -> None:
    response = client.get("/api/v1/tokens", headers=operator_headers)
    assert response.status_code == 403
    assert "admin" in response.json()["detail"]


def test_revoke_token_then_token_unauthorized(
    client: TestClient, db: Session, admin_headers: dict[str, str]
) -> None:
    # Prepare
    token = crud.create_token(session=db, role="operator", name="leaked")
    db.commit()
    before = client.get("/api/v1/runs", headers={"Authorization": f"Bearer {token}"})
    token_id = _token_id(db, token)

    # Execute
    revoked = client.post(f"/api/v1/tokens/{token_id}/revoke", headers=admin_headers)
    again = client.post(f"/api/v1/tokens/{token_id}/revoke", headers=admin_headers)
    after = client.get("/api/v1/runs", headers={"Authorization": f"Bearer {token}"})

    # Assert
    assert before.status_code == 200
    assert (revoked.status_code, revoked.json()["status"]) == (200, "revoked")
    assert revoked.json()["revoked_at"] is not None
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]  # first time kept
    assert after.status_code == 401
    assert after.headers["www-authenticate"] == "Bearer"
    detail = after.json()["detail"]
    assert "revoked" in detail and "aptfleet token create --role admin" in detail


def test_revoke_token_operator_forbidden(
    client: TestClient, db: Session, operator_headers: dict[str, str], admin_headers: dict[str, str]
) -> None:
    # Prepare
    admin_id = db.scalar(select(ApiToken.id).where(ApiToken.role == "admin"))

    # Execute
    response = client.post(f"/api/v1/tokens/{admin_id}/revoke", headers=operator_headers)

    # Assert
    assert response.status_code == 403
    assert client.get("/api/v1/runs", headers=admin_headers).status_code == 200


def test_revoke_token_unknown_not_found(client: TestClient, admin_headers: dict[str, str]) -> None:
    response = client.post("/api/v1/tokens/999999/revoke", headers=admin_headers)
    assert response.status_code == 404
    assert "aptfleet token list" in response.json()["detail"]


def test_expired_token_unauthorized(client: TestClient, db: Session) -> None:
    # Prepare: a token created with an expiry that has passed since
    token = crud.create_token(
        session=db, role="admin", name="temp", expires_at=utcnow() + timedelta(hours=1)
    )
    db.commit()
    live = client.get("/api/v1/runs", headers={"Authorization": f"Bearer {token}"})
    db.execute(update(ApiToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    db.commit()

    # Execute
    response = client.get("/api/v1/runs", headers={"Authorization": f"Bearer {token}"})

    # Assert
    assert live.status_code == 200
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]
    assert "aptfleet token create --role admin" in response.json()["detail"]


def test_token_last_used_recorded_at_most_once_a_minute(client: TestClient, db: Session) -> None:
    # Prepare
    token = crud.create_token(session=db, role="operator")
    db.commit()
    headers = {"Authorization": f"Bearer {token}"}

    # Execute
    client.get("/api/v1/runs", headers=headers)
    db.commit()
    first = db.scalar(select(ApiToken.last_used_at))
    client.get("/api/v1/runs", headers=headers)
    db.commit()
    second = db.scalar(select(ApiToken.last_used_at))
    stale = utcnow() - timedelta(minutes=2)
    db.execute(update(ApiToken).values(last_used_at=stale))
    db.commit()
    client.get("/api/v1/runs", headers=headers)
    db.commit()
    third = db.scalar(select(ApiToken.last_used_at))

    # Assert
    assert first is not None and second == first  # the second read did not write
    assert third is not None and third > stale + timedelta(minutes=1)
