"""Tests of the console's policy editor: admins edit, preview and revert; operators read."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from server.coordinator import crud
from server.coordinator.crud.actions import list_actions
from server.coordinator.services.run_store import run_policy_provider
from tests.utils.dashboard import csrf_token, sign_in
from tests.utils.html import elements
from tests.utils.run import create_random_run


def _editor_fields(client: TestClient) -> dict[str, str]:
    """The editor's fields as the page fills them (current version), and its CSRF token."""
    html = client.get("/policy").text
    fields = {i["name"]: i.get("value", "") for i in elements(html, "input") if "name" in i}
    for name in ("overrides", "rounding", "adaptive"):
        fields.pop(name, None)
    return {**fields, **_choices(html), "csrf_token": csrf_token(html)}


def _choices(html: str) -> dict[str, str]:
    """Select and textarea values the editor shows."""
    values = {}
    for name in ("rounding", "adaptive"):
        match = re.search(rf'<select id="{name}"[^>]*>.*?<option selected>([^<]*)<', html)
        assert match is not None, name
        values[name] = match[1]
    match = re.search(r'<textarea id="overrides"[^>]*>([^<]*)<', html)
    assert match is not None
    values["overrides"] = match[1].replace("&quot;", '"')
    return values


def _sign_in(client: TestClient, headers: dict[str, str]) -> None:
    assert sign_in(client, headers["Authorization"].removeprefix("Bearer ")).status_code == 303


def test_policy_page_operator_read_only_and_forged_post_forbidden(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    _sign_in(client, operator_headers)
    page = client.get("/policy").text
    csrf = csrf_token(page)  # the sign-out form's token: a valid token of this session

    # Execute
    forged = client.post(
        "/policy", data={"csrf_token": csrf, "intent": "save", "bits_max": "6", "note": "x"}
    )
    revert = client.post("/policy/revert/1", data={"csrf_token": csrf})

    # Assert
    assert elements(page, "p", id="policy-read-only")
    assert not elements(page, "form", id="policy-form") and not elements(
        page, "div", id="revert-forms"
    )
    assert forged.status_code == 403 and revert.status_code == 403
    assert "needs the admin role" in forged.text
    db.commit()
    assert crud.get_current_policy_row(session=db).version == 1


def test_policy_preview_lists_changes_and_fleet_runs(
    client: TestClient, db: Session, admin_headers: dict[str, str]
) -> None:
    # Prepare
    follower = create_random_run(db, status="running")
    _sign_in(client, admin_headers)
    fields = _editor_fields(client)
    new_max = "6" if fields["bits_max"] != "6" else "7"

    # Execute
    response = client.post("/policy", data={**fields, "bits_max": new_max, "intent": "preview"})

    # Assert: nothing stored; the diff and the run that picks the change up
    assert response.status_code == 200
    assert [r["data-field"] for r in elements(response.text, "tr") if "data-field" in r] == [
        "bits_max"
    ]
    assert elements(response.text, "a", href=f"/runs/{follower.id}")
    db.commit()
    assert crud.get_current_policy_row(session=db).version == 1


def test_policy_save_needs_note_and_shows_errors_beside_fields(
    client: TestClient, db: Session, admin_headers: dict[str, str]
) -> None:
    # Prepare
    _sign_in(client, admin_headers)
    fields = _editor_fields(client)

    # Execute
    no_note = client.post("/policy", data={**fields, "intent": "save", "note": ""})
    bad = client.post(
        "/policy",
        data={
            **fields,
            "t_min": "0.5",
            "t_max": "0.6",
            "overrides": "{bad",
            "intent": "save",
            "note": "try",
        },
    )
    bad_max = client.post(
        "/policy", data={**fields, "t_min": "0.5", "t_max": "0.6", "intent": "save", "note": "t"}
    )

    bad_budget = client.post(
        "/policy",
        data={
            **fields,
            "budgets": '{"mcu": {"memory_bytes": -5}}',
            "intent": "save",
            "note": "budget",
        },
    )

    # Assert
    assert bad_budget.status_code == 422 and elements(bad_budget.text, "p", id="budgets-error")
    assert no_note.status_code == 422 and elements(no_note.text, "p", id="note-error")
    assert bad.status_code == 422 and elements(bad.text, "p", id="overrides-error")
    assert bad_max.status_code == 422
    assert elements(bad_max.text, "p", id="t_max-error")  # the API's rule, beside t_max
    db.commit()
    assert crud.get_current_policy_row(session=db).version == 1


def test_policy_save_and_revert_new_versions_reach_next_round(
    client: TestClient, db: Session, engine: Engine, admin_headers: dict[str, str]
) -> None:
    # Prepare
    follower = create_random_run(db, status="running")
    _sign_in(client, admin_headers)
    fields = _editor_fields(client)
    old_max = int(fields["bits_max"])
    new_max = str(old_max - 1)
    provider = run_policy_provider(sessionmaker(engine), follower.id)

    # Execute
    saved = client.post(
        "/policy",
        data={**fields, "bits_max": new_max, "intent": "save", "note": "cap for the demo"},
        follow_redirects=False,
    )
    next_round = provider()
    page = client.get("/policy").text
    reverted = client.post(
        "/policy/revert/1", data={"csrf_token": csrf_token(page)}, follow_redirects=False
    )
    after_revert = provider()

    # Assert
    assert saved.status_code == 303 and saved.headers["location"] == "/policy?saved=2"
    assert (next_round[0], next_round[1].bits_max) == (2, int(new_max))
    assert reverted.headers["location"] == "/policy?saved=3"
    assert (after_revert[0], after_revert[1].bits_max) == (3, old_max)
    db.commit()
    assert crud.get_current_policy_row(session=db).version == 3
    rows, _ = crud.list_policies(session=db)
    by_version = {p.version: p for p in rows}
    assert (by_version[2].author, by_version[2].note) == ("alice", "cap for the demo")
    assert by_version[3].note == "Revert to v1"
    actions = list_actions(session=db, target="policy")
    assert [(a.actor, a.detail) for a in actions] == [
        ("alice", "v3: Revert to v1"),
        ("alice", "v2: cap for the demo"),
    ]
