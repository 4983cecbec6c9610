"""Tests of the console's run control: labels, the start form, stop, resume, live, downloads."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from server.coordinator import crud
from server.coordinator.crud.actions import list_actions
from tests.utils.dashboard import csrf_token, sign_in
from tests.utils.html import elements
from tests.utils.launcher import RecordingLauncher
from tests.utils.run import create_random_run, make_round_record

_VALID = {
    "task": "digits",
    "method": "apt",
    "clients": "4",
    "fraction": "1.0",
    "rounds": "3",
    "alpha": "0.5",
    "seed": "7",
    "policy": "",
}


def _signed_in(client: TestClient, headers: dict[str, str]) -> str:
    """Sign ``client`` in with the token of ``headers``; the session's CSRF token."""
    response = sign_in(client, headers["Authorization"].removeprefix("Bearer "))
    assert response.status_code == 303
    return csrf_token(client.get("/runs/new").text)


def _finished_run(db: Session, rounds: int = 2) -> int:
    run = create_random_run(db, status="running", rounds=rounds)
    for r in range(1, rounds + 1):
        crud.record_round(session=db, run_id=run.id, record=make_round_record(r))
    crud.set_run_savings(
        session=db,
        run_id=run.id,
        savings={"energy": 0.4, "parameter_memory": 0.7, "uplink_bytes": 0.5},
    )
    crud.set_run_status(session=db, run_id=run.id, status="completed")
    db.commit()
    return run.id


def test_run_page_savings_labelled_measured_or_modelled(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    run_id = _finished_run(db)

    # Execute
    html = client.get(f"/runs/{run_id}", headers=operator_headers).text

    # Assert: human names, units, and how each figure was obtained
    rows = {row["data-key"] for row in elements(html, "tr", **{"data-key": "energy"})}
    assert rows == {"energy"}
    savings = html[html.index('id="savings"') : html.index("</table>", html.index('id="savings"'))]
    assert "Client training energy (J)" in savings
    assert "Uplink traffic (devices to coordinator) (B)" in savings
    assert "uplink_bytes</td>" not in savings and "parameter_memory</td>" not in savings
    modelled = elements(html, "a", class_="modelled")
    assert modelled and all(a["href"] == "/cost-model#energy" for a in modelled)
    assert elements(html, "span", class_="measured")
    assert "energy (J, modelled)" in html  # the energy chart's axis


def test_read_cost_model_page_constants_and_citation(
    client: TestClient, operator_headers: dict[str, str]
) -> None:
    # Execute
    response = client.get("/cost-model", headers=operator_headers)

    # Assert
    assert response.status_code == 200
    assert elements(response.text, "section", id="energy")
    constants = {r["data-constant"] for r in elements(response.text, "tr") if "data-constant" in r}
    assert {"int8_mult_pj", "fp32_mult_pj", "mem_pj_per_64b"} <= constants
    assert "Horowitz" in response.text and "ISSCC" in response.text


def test_create_run_from_form_starts_queued_run_and_records_who(
    client: TestClient, db: Session, operator_headers: dict[str, str], launcher: RecordingLauncher
) -> None:
    # Prepare
    csrf = _signed_in(client, operator_headers)

    # Execute
    response = client.post("/runs/new", data={**_VALID, "csrf_token": csrf}, follow_redirects=False)

    # Assert
    assert response.status_code == 303
    run_id = int(response.headers["location"].rsplit("/", 1)[1])
    db.commit()
    run = crud.get_run(session=db, run_id=run_id)
    assert run is not None and (run.status, run.rounds, run.clients) == ("queued", 3, 4)
    assert launcher.started == [run_id]
    [action] = list_actions(session=db, target=f"run:{run_id}")
    assert (action.actor, action.role, action.action) == ("bob", "operator", "start")
    page = client.get(f"/runs/{run_id}").text
    assert elements(page, "form", id="stop-form")
    assert elements(page, "tr", class_="action-row")


def test_create_run_from_form_errors_match_the_api(
    client: TestClient, db: Session, operator_headers: dict[str, str], launcher: RecordingLauncher
) -> None:
    # Prepare
    csrf = _signed_in(client, operator_headers)
    bad = {**_VALID, "rounds": "501", "fraction": "abc", "task": "cifar"}
    api = client.post(
        "/api/v1/runs",
        json={"task": "cifar", "method": "apt", "rounds": 501, "fraction": "abc"},
        headers=operator_headers,
    ).json()["detail"]

    # Execute
    response = client.post("/runs/new", data={**bad, "csrf_token": csrf})

    # Assert: 422, each error beside its field, with the API's message; nothing started
    assert response.status_code == 422
    assert launcher.started == []
    for error in api:
        field = error["loc"][-1]
        [shown] = elements(response.text, "p", id=f"{field}-error")
        text = re.search(rf'id="{field}-error">([^<]*)<', response.text)
        assert text is not None and text[1].startswith(error["msg"].replace("'", "&#x27;"))
    assert elements(response.text, "input", name="rounds", value="501")  # values kept


def test_stop_and_resume_from_form(
    client: TestClient, db: Session, operator_headers: dict[str, str], launcher: RecordingLauncher
) -> None:
    # Prepare
    csrf = _signed_in(client, operator_headers)
    run = create_random_run(db, status="running")

    # Execute
    stopped = client.post(f"/runs/{run.id}/stop", data={"csrf_token": csrf}, follow_redirects=False)
    again = client.post(f"/runs/{run.id}/stop", data={"csrf_token": csrf})
    resumed = client.post(
        f"/runs/{run.id}/resume", data={"csrf_token": csrf}, follow_redirects=False
    )

    # Assert
    assert stopped.status_code == 303 and resumed.status_code == 303
    assert again.status_code == 409 and "already stopped" in again.text
    assert launcher.stopped == [run.id] and launcher.started == [run.id]
    db.commit()
    actions = [a.action for a in list_actions(session=db, target=f"run:{run.id}")]
    assert actions == ["resume", "stop"]


def test_stop_run_from_form_without_csrf_refused(
    client: TestClient, db: Session, operator_headers: dict[str, str], launcher: RecordingLauncher
) -> None:
    # Prepare
    _signed_in(client, operator_headers)
    run = create_random_run(db, status="running")

    # Execute
    forged = client.post(f"/runs/{run.id}/stop", data={"csrf_token": "guess"})
    bearer = client.post(f"/runs/{run.id}/stop", headers=operator_headers)

    # Assert
    assert forged.status_code == 403 and bearer.status_code == 403
    assert launcher.stopped == []


def test_read_run_live_summary_is_the_api_summary(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    queued = create_random_run(db, status="queued", rounds=9)
    run_id = _finished_run(db, rounds=3)

    # Execute
    live = client.get(f"/runs/{queued.id}/live", headers=operator_headers)
    done = client.get(f"/runs/{run_id}/live", headers=operator_headers).json()
    api = client.get(f"/api/v1/runs/{run_id}/summary", headers=operator_headers).json()
    anonymous = client.get(f"/runs/{run_id}/live", headers={"Authorization": "Bearer x"})

    # Assert
    assert live.status_code == 200
    queued_summary = live.json()
    assert (queued_summary["status"], queued_summary["queue_position"]) == ("queued", 1)
    assert done == api
    assert (done["status"], done["current_round"], done["rounds_recorded"]) == ("completed", 3, 3)
    assert anonymous.status_code == 401


def test_read_run_model_download_packed_and_float(
    client: TestClient, app: object, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    run_id = _finished_run(db)
    page = client.get(f"/runs/{run_id}", headers=operator_headers).text

    # Execute
    packed = client.get(f"/runs/{run_id}/model?format=packed", headers=operator_headers)
    no_converter = client.get(f"/runs/{run_id}/model?format=torch", headers=operator_headers)
    app.state.model_converter = lambda data, run: b"float:" + data  # type: ignore[attr-defined]
    torch_file = client.get(f"/runs/{run_id}/model?format=torch", headers=operator_headers)
    signed_out = client.get(f"/runs/{run_id}/model", follow_redirects=False)

    # Assert
    assert elements(page, "a", id="download-packed") and elements(page, "a", id="download-float")
    assert packed.status_code == 200 and packed.content == b"packed-model"
    assert packed.headers["content-disposition"].endswith(f'run-{run_id}-round-2.apt"')
    assert no_converter.status_code == 501
    assert torch_file.content == b"float:packed-model"
    assert signed_out.status_code == 303
