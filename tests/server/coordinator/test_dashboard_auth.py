"""Tests of the operator dashboard's sign-in: sessions, cookies, CSRF, revocation, lockout."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.coordinator import crud
from server.coordinator.core.security import hash_token
from server.coordinator.dashboard.auth import COOKIE_NAME
from server.coordinator.tables import DashboardSession, utcnow
from tests.utils.dashboard import csrf_token, sign_in
from tests.utils.html import elements
from tests.utils.run import create_random_run


def _token(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def test_read_overview_without_token_redirects_to_login(client: TestClient) -> None:
    # Execute
    response = client.get("/", follow_redirects=False)
    login = client.get(response.headers["location"])

    # Assert
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2F"
    assert login.status_code == 200
    assert elements(login.text, "form", id="login-form")
    assert elements(login.text, "input", name="next", value="/")


def test_read_run_page_without_token_redirects_to_login(client: TestClient, db: Session) -> None:
    # Prepare
    run = create_random_run(db)

    # Execute
    known = client.get(f"/runs/{run.id}", follow_redirects=False)
    unknown = client.get("/runs/999999", follow_redirects=False)

    # Assert: same answer whether or not the run exists
    assert (known.status_code, unknown.status_code) == (303, 303)
    assert known.headers["location"] == f"/login?next=%2Fruns%2F{run.id}"


def test_read_overview_bad_bearer_token_redirects_to_login(client: TestClient) -> None:
    response = client.get(
        "/", headers={"Authorization": "Bearer aptf_nope"}, follow_redirects=False
    )
    assert response.status_code == 303


def test_create_login_session_invalid_token_unauthorized(client: TestClient) -> None:
    # Execute
    response = sign_in(client, "aptf_wrong")

    # Assert
    assert response.status_code == 401
    assert elements(response.text, "p", id="login-error")
    assert COOKIE_NAME not in response.cookies


def test_create_login_session_sets_strict_httponly_session_cookie(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    run = create_random_run(db)

    # Execute
    response = sign_in(client, _token(operator_headers), f"/runs/{run.id}")
    page = client.get(f"/runs/{run.id}")

    # Assert
    assert response.status_code == 303
    assert response.headers["location"] == f"/runs/{run.id}"
    (cookie,) = [
        c.lower()
        for c in response.headers.get_list("set-cookie")
        if c.startswith(f"{COOKIE_NAME}=")
    ]
    assert {"httponly", "samesite=strict", "path=/"} <= {part.strip() for part in cookie.split(";")}
    assert "secure" not in {part.strip() for part in cookie.split(";")}  # plain HTTP here
    assert page.status_code == 200
    assert elements(page.text, "h1", id="run-title")


def test_create_login_session_https_cookie_secure(
    app: FastAPI, db: Session, operator_headers: dict[str, str]
) -> None:
    # Execute
    with TestClient(app, base_url="https://testserver") as client:
        response = sign_in(client, _token(operator_headers))

    # Assert
    (cookie,) = [
        c.lower()
        for c in response.headers.get_list("set-cookie")
        if c.startswith(f"{COOKIE_NAME}=")
    ]
    assert "secure" in {part.strip() for part in cookie.split(";")}


def test_session_cookie_not_the_token_nor_a_bearer_token(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    token = _token(operator_headers)
    sign_in(client, token)
    session_id = client.cookies[COOKIE_NAME]

    # Execute: a stolen cookie replayed against the API
    api = client.get("/api/v1/runs", headers={"Authorization": f"Bearer {session_id}"})

    # Assert
    assert session_id != token and token not in session_id
    assert api.status_code == 401
    stored = db.scalars(select(DashboardSession.session_hash)).all()
    assert stored == [hash_token(session_id)]  # only its digest is kept


def test_create_login_session_next_elsewhere_goes_home(
    client: TestClient, operator_headers: dict[str, str]
) -> None:
    # Execute
    responses = [
        sign_in(client, _token(operator_headers), nxt)
        for nxt in ("https://evil.example/", "//evil.example", "/api/v1/runs")
    ]

    # Assert
    assert [r.headers["location"] for r in responses] == ["/", "/", "/"]


def test_create_login_session_cross_site_forbidden(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare: a valid form and CSRF cookie, as a cross-site page could not have them
    form = client.get("/login")
    data = {"token": _token(operator_headers), "next": "/", "csrf_token": csrf_token(form.text)}

    # Execute
    forged = [
        client.post(
            "/login", data=data, follow_redirects=False, headers={"Origin": "https://evil.example"}
        ),
        client.post("/login", data=data, follow_redirects=False, headers={"Origin": "null"}),
        client.post(
            "/login",
            data=data,
            follow_redirects=False,
            headers={"Referer": "https://evil.example/page"},
        ),
        client.post("/login", data={**data, "csrf_token": "guess"}, follow_redirects=False),
        client.post(
            "/login",
            data={k: v for k, v in data.items() if k != "csrf_token"},
            follow_redirects=False,
        ),
    ]
    same_site = client.post(
        "/login", data=data, follow_redirects=False, headers={"Origin": "http://testserver"}
    )

    # Assert
    assert [r.status_code for r in forged] == [403] * 5
    assert all(COOKIE_NAME not in r.cookies for r in forged)
    assert same_site.status_code == 303


def test_create_login_session_without_form_cookie_forbidden(
    client: TestClient, operator_headers: dict[str, str]
) -> None:
    # Prepare: the token of a form someone else loaded (the cross-site attacker's own)
    attacker = csrf_token(client.get("/login").text)
    client.cookies.clear()

    # Execute
    response = client.post(
        "/login",
        data={"token": _token(operator_headers), "csrf_token": attacker},
        follow_redirects=False,
    )

    # Assert
    assert response.status_code == 403


def test_delete_login_session_cross_site_forbidden_session_kept(
    client: TestClient, operator_headers: dict[str, str]
) -> None:
    # Prepare
    sign_in(client, _token(operator_headers))
    csrf = csrf_token(client.get("/").text)

    # Execute
    forged = [
        client.post(
            "/logout",
            data={"csrf_token": csrf},
            follow_redirects=False,
            headers={"Origin": "https://evil.example"},
        ),
        client.post("/logout", data={}, follow_redirects=False),
        client.post("/logout", data={"csrf_token": "x" * 64}, follow_redirects=False),
    ]
    still = client.get("/", follow_redirects=False)

    # Assert
    assert [r.status_code for r in forged] == [403, 403, 403]
    assert still.status_code == 200


def test_read_overview_revoked_token_ends_session(client: TestClient, db: Session) -> None:
    # Prepare
    token = crud.create_token(session=db, role="operator", name="carol")
    db.commit()
    sign_in(client, token)
    row = crud.authenticate_token(session=db, token=token)
    assert row is not None
    crud.revoke_token(session=db, token_id=row.id)
    db.commit()

    # Execute
    response = client.get("/", follow_redirects=False)

    # Assert
    assert response.status_code == 303
    assert "expired=1" in response.headers["location"]
    assert f'{COOKIE_NAME}=""' in response.headers["set-cookie"]
    assert db.scalars(select(DashboardSession)).all() == []


def test_read_overview_expired_session_redirects(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    sign_in(client, _token(operator_headers))
    db.execute(update(DashboardSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    db.commit()

    # Execute
    response = client.get("/", follow_redirects=False)

    # Assert
    assert response.status_code == 303
    assert "expired=1" in response.headers["location"]


def test_delete_login_session_ends_session_server_side(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    sign_in(client, _token(operator_headers))
    session_id = client.cookies[COOKIE_NAME]
    page = client.get("/", follow_redirects=False)
    assert page.status_code == 200

    # Execute
    response = client.post(
        "/logout", data={"csrf_token": csrf_token(page.text)}, follow_redirects=False
    )
    client.cookies.clear()  # the jar keeps expired cookies until cleared; the header matters
    replayed = client.get("/", cookies={COOKIE_NAME: session_id}, follow_redirects=False)

    # Assert
    assert (response.status_code, response.headers["location"]) == (303, "/login")
    assert f'{COOKIE_NAME}=""' in response.headers["set-cookie"]
    assert replayed.status_code == 303  # a copied cookie died with the sign-out
    db.commit()
    assert db.scalars(select(DashboardSession)).all() == []


def test_create_login_session_repeated_failures_too_many_requests(
    app: FastAPI, client: TestClient, operator_headers: dict[str, str]
) -> None:
    # Prepare
    limit = app.state.settings.AUTH_FAILURE_LIMIT

    # Execute
    failures = [sign_in(client, f"aptf_guess{i}").status_code for i in range(limit)]
    throttled = sign_in(client, _token(operator_headers))  # even a valid token waits
    with TestClient(app, client=("10.0.0.7", 50000)) as other:
        elsewhere = sign_in(other, _token(operator_headers))

    # Assert
    assert failures == [401] * limit
    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["retry-after"]) <= 60
    assert elements(throttled.text, "p", id="login-error")
    assert elsewhere.status_code == 303  # another address is not locked out


def test_read_login_page_names_existing_command(client: TestClient) -> None:
    # Execute
    html = client.get("/login").text

    # Assert: tests/server/cli/test_coordinator.py runs this very command
    assert "server token" not in html
    assert '<code id="login-command">aptfleet token create --role admin</code>' in html
