"""Tests of the runs overview's live summary (``/overview/live``), polled instead of reloads."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from server.coordinator import crud
from tests.utils.html import elements
from tests.utils.run import create_random_run, make_round_record


def test_read_overview_live_totals_and_asked_runs(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    running = create_random_run(db, status="running", rounds=8)
    other = create_random_run(db, status="running", rounds=3)
    for r in (1, 2):
        crud.record_round(session=db, run_id=running.id, record=make_round_record(r))
    db.commit()
    page = client.get("/", headers=operator_headers).text

    # Execute
    live = client.get(
        f"/overview/live?run={running.id}&run=nope&run=999999", headers=operator_headers
    )
    signed_out = client.get("/overview/live")

    # Assert: only the asked, existing runs; the totals as the page writes them
    assert live.status_code == 200 and live.headers["cache-control"] == "no-store"
    summary = live.json()
    assert summary["count"] == 2
    [run] = summary["runs"]
    assert (run["id"], run["status"], run["current_round"], run["rounds"]) == (
        running.id,
        "running",
        2,
        8,
    )
    assert run["finished"] == "—" and run["accuracy"].endswith("%")
    for stat_id, text in summary["stats"].items():
        [tile] = elements(page, "div", id=stat_id)
        assert f'id="{stat_id}"><div class="value">{text}</div>' in page, tile
    assert other.id not in [r["id"] for r in summary["runs"]]
    assert signed_out.status_code == 401


def test_read_overview_live_size_does_not_grow_with_rounds(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    run_id = create_random_run(db, status="running", rounds=60).id
    for r in range(1, 6):
        crud.record_round(session=db, run_id=run_id, record=make_round_record(r))
    db.commit()  # no read of the run after this: the next writes need a fresh snapshot
    early = client.get(f"/overview/live?run={run_id}", headers=operator_headers).content

    # Execute: 50 rounds later
    for r in range(6, 56):
        crud.record_round(session=db, run_id=run_id, record=make_round_record(r))
    db.commit()
    late = client.get(f"/overview/live?run={run_id}", headers=operator_headers).content

    # Assert: the same few hundred bytes (only digits of the figures differ)
    assert len(early) < 600
    assert abs(len(late) - len(early)) <= 8
