"""Tests of the action log: REST actions are recorded like console ones and shown alike."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.coordinator.crud.actions import list_actions
from server.coordinator.dashboard.routes import ACTIONS_PER_PAGE
from server.coordinator.services.audit import record
from server.coordinator.tables import ApiToken, ConsoleAction
from tests.utils.html import elements
from tests.utils.launcher import RecordingLauncher
from tests.utils.run import create_random_run


def _cells(html: str) -> list[str]:
    """The text of the first action row of ``html`` (when, who, role, action, on, detail)."""
    start = html.index('<tr class="action-row"')
    row = html[start : html.index("</tr>", start)]
    return [cell.split(">", 1)[1] for cell in row.split("</td>")[:-1]]


def test_rest_stop_by_operator_appears_on_run_page(
    client: TestClient, db: Session, operator_headers: dict[str, str], launcher: RecordingLauncher
) -> None:
    # Prepare
    run = create_random_run(db, status="running")
    secret = operator_headers["Authorization"].removeprefix("Bearer ")

    # Execute
    stopped = client.post(f"/api/v1/runs/{run.id}/stop", headers=operator_headers)
    page = client.get(f"/runs/{run.id}", headers=operator_headers).text

    # Assert: the operator's name and role on the run page, as for a console stop
    assert stopped.status_code == 200 and launcher.stopped == [run.id]
    [row] = elements(page, "tr", class_="action-row")
    assert row["data-action"] == "stop"
    when, who, role, action, target, detail = _cells(page)
    assert (who, role, action, target) == ("bob", "operator", "stop", f"run:{run.id}")
    assert when and detail == "status now stopped"
    db.commit()
    for stored in db.scalars(select(ConsoleAction)):
        assert secret not in " ".join(str(v) for v in vars(stored).values())


def test_rest_actions_recorded_with_token_name_and_role(
    client: TestClient,
    db: Session,
    operator_headers: dict[str, str],
    admin_headers: dict[str, str],
    launcher: RecordingLauncher,
) -> None:
    # Prepare
    body = {"task": "digits", "method": "apt", "rounds": 2}
    operator_id = db.scalar(select(ApiToken.id).where(ApiToken.name == "bob"))

    # Execute: start, stop and resume (operator), a policy change and a revocation (admin)
    run_id = client.post("/api/v1/runs", json=body, headers=operator_headers).json()["id"]
    client.post(f"/api/v1/runs/{run_id}/stop", headers=operator_headers)
    client.post(f"/api/v1/runs/{run_id}/resume", headers=operator_headers)
    policy = client.put(
        "/api/v1/policy", json={"bits_max": 7, "note": "one bit less"}, headers=admin_headers
    )
    revoked = client.post(f"/api/v1/tokens/{operator_id}/revoke", headers=admin_headers)
    refused = client.put("/api/v1/policy", json={"bits_max": 6}, headers=operator_headers)
    overview = client.get("/", headers=admin_headers).text

    # Assert
    assert policy.status_code == 200 and revoked.status_code == 200
    assert refused.status_code == 401  # revoked: nothing recorded for it
    db.commit()
    found = [(a.actor, a.role, a.action, a.target) for a in list_actions(session=db)]
    version = policy.json()["version"]
    assert found == [
        ("alice", "admin", "token-revoke", f"token:{operator_id}"),
        ("alice", "admin", "policy-update", "policy"),
        ("bob", "operator", "resume", f"run:{run_id}"),
        ("bob", "operator", "stop", f"run:{run_id}"),
        ("bob", "operator", "start", f"run:{run_id}"),
    ]
    [change] = list_actions(session=db, target="policy")
    assert change.detail == f"v{version}: one bit less"
    [start] = list_actions(session=db, target=f"run:{run_id}")[-1:]
    assert "rounds=2" in (start.detail or "")
    shown = [r["data-action"] for r in elements(overview, "tr", class_="action-row")]
    assert shown == ["token-revoke", "policy-update", "resume", "stop", "start"]


def test_rest_action_refused_leaves_no_row(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    run = create_random_run(db, status="completed")

    # Execute
    conflict = client.post(f"/api/v1/runs/{run.id}/stop", headers=operator_headers)
    forbidden = client.put("/api/v1/policy", json={"bits_max": 6}, headers=operator_headers)

    # Assert
    assert conflict.status_code == 409 and forbidden.status_code == 403
    db.commit()
    assert list_actions(session=db) == []


def test_actions_page_lists_every_action_in_key_pages(
    client: TestClient, db: Session, admin_headers: dict[str, str]
) -> None:
    # Prepare: a page and 5 more actions, the newest one through the API
    admin = db.scalars(select(ApiToken).where(ApiToken.name == "alice")).one()
    for i in range(ACTIONS_PER_PAGE + 4):
        record(session=db, actor=admin, action="stop", target=f"run:{i + 1}")
    db.commit()
    client.put("/api/v1/policy", json={"note": "same values"}, headers=admin_headers)

    # Execute
    first = client.get("/actions", headers=admin_headers)
    [link] = elements(first.text, "a", id="actions-next")
    second = client.get(link["href"], headers=admin_headers)
    bad_cursor = client.get("/actions?cursor=%%%", headers=admin_headers)
    signed_out = client.get("/actions", follow_redirects=False)

    # Assert
    page_one = [r["data-action"] for r in elements(first.text, "tr", class_="action-row")]
    page_two = [r["data-action"] for r in elements(second.text, "tr", class_="action-row")]
    assert len(page_one) == ACTIONS_PER_PAGE and len(page_two) == 5
    assert page_one[0] == "policy-update" and _cells(first.text)[1:3] == ["alice", "admin"]
    assert f"{ACTIONS_PER_PAGE + 5} action(s) recorded" in first.text
    assert not elements(second.text, "a", id="actions-next")
    assert elements(second.text, "a", id="actions-first")
    assert bad_cursor.status_code == 422
    assert signed_out.status_code == 303
