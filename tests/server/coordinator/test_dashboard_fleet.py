"""Tests of the console's comparison and fleet pages."""

from __future__ import annotations

import dataclasses

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from server.coordinator import crud
from server.coordinator.dashboard.console_routes import DEVICE_ROUNDS_PER_PAGE
from server.coordinator.tables import Device
from tests.utils.html import elements
from tests.utils.run import create_random_run, make_round_record

REASON = "layer fc1 has 40 bits, above the class cap of 8"


def _run_with_rounds(db: Session, rounds: int, nodes: tuple[int, ...] = (11, 12, 13)) -> int:
    run = create_random_run(db, status="running", rounds=rounds)
    for r in range(1, rounds + 1):
        crud.record_round(session=db, run_id=run.id, record=make_round_record(r, nodes=nodes))
    db.commit()
    return run.id


def test_compare_page_draws_every_selected_run(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    first, second = _run_with_rounds(db, 3), _run_with_rounds(db, 4)

    # Execute
    response = client.get(f"/compare?run={first}&run={second}", headers=operator_headers)

    # Assert: one line per run in each chart, the final bits, the savings row
    assert response.status_code == 200
    for chart in ("accuracy", "energy", "uplink", "downlink"):
        [svg] = elements(response.text, "svg", id=f"compare-{chart}")
        assert svg["data-series"] == "2"
    assert elements(response.text, "table", id="final-bits")
    rows = [r["data-run"] for r in elements(response.text, "tr") if "data-run" in r]
    assert len(rows) == 1 and rows[0] in {str(first), str(second)}


def test_compare_page_needs_two_runs(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    only = _run_with_rounds(db, 2)

    # Execute
    response = client.get(f"/compare?run={only}&run=nope", headers=operator_headers)

    # Assert
    assert response.status_code == 200
    assert elements(response.text, "p", id="compare-message")
    assert not elements(response.text, "svg")
    assert elements(response.text, "input", type="checkbox", value=str(only), checked="")


def test_devices_page_filters_and_key_pages(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare: 55 devices (more than a page), one offline
    _run_with_rounds(db, 1, nodes=tuple(range(100, 155)))
    offline = db.query(Device).order_by(Device.id).first()
    assert offline is not None
    offline.status = "offline"
    db.commit()

    # Execute
    first = client.get("/devices", headers=operator_headers)
    [link] = elements(first.text, "a", id="devices-next")
    second = client.get(link["href"], headers=operator_headers)
    only_offline = client.get("/devices?status=offline", headers=operator_headers)
    other_class = client.get("/devices?class=mcu", headers=operator_headers)
    bad_cursor = client.get("/devices?cursor=%%%", headers=operator_headers)

    # Assert
    ids = [r["data-device"] for r in elements(first.text, "tr", class_="device-row")]
    more = [r["data-device"] for r in elements(second.text, "tr", class_="device-row")]
    assert len(ids) == 50 and len(more) == 5 and not set(ids) & set(more)
    assert not elements(second.text, "a", id="devices-next")
    assert [r["data-device"] for r in elements(only_offline.text, "tr", class_="device-row")] == [
        str(offline.id)
    ]
    assert elements(other_class.text, "p", id="devices-empty")
    assert bad_cursor.status_code == 422 and "cursor" in bad_cursor.text
    assert "(fleet)" in first.text  # the class's bit range from the current policy


def test_device_page_shows_rejection_reason_and_bits(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare: round 2 rejects node 12's update
    run = create_random_run(db, status="running", rounds=2)
    crud.record_round(session=db, run_id=run.id, record=make_round_record(1))
    record = make_round_record(2)
    clients = [
        dataclasses.replace(c, rejected=REASON, energy_j=0.0, layers=[]) if c.node_id == 12 else c
        for c in record.clients
    ]
    record = dataclasses.replace(record, clients=clients, rejections=1)
    crud.record_round(session=db, run_id=run.id, record=record)
    db.commit()
    device = db.query(Device).filter(Device.node_id == 12).one()

    # Execute
    response = client.get(f"/devices/{device.id}", headers=operator_headers)
    missing = client.get("/devices/999999", headers=operator_headers)

    # Assert
    assert response.status_code == 200
    [item] = elements(response.text, "li", class_="rejection")
    assert (item["data-run"], item["data-round"]) == (str(run.id), "2")
    assert REASON in response.text
    [heat] = elements(response.text, "svg", id=f"device-bits-run-{run.id}")
    assert heat["data-rounds"] == "1"  # bits of the trained round only
    assert elements(response.text, "svg", id="device-energy")
    assert missing.status_code == 404


def test_device_page_rounds_key_pages(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare: one device in two runs, 10 rounds more than a page in all
    older = _run_with_rounds(db, 10, nodes=(11,))
    newer = _run_with_rounds(db, DEVICE_ROUNDS_PER_PAGE, nodes=(11,))
    device_id = db.query(Device.id).filter(Device.node_id == 11).scalar()

    # Execute
    first = client.get(f"/devices/{device_id}", headers=operator_headers)
    [link] = elements(first.text, "a", id="device-rounds-next")
    second = client.get(link["href"].split("#")[0], headers=operator_headers)
    bad_cursor = client.get(f"/devices/{device_id}?cursor=%%%", headers=operator_headers)

    # Assert: every row once, newest first, across the two pages
    def shown(html: str) -> list[tuple[int, int]]:
        rows = elements(html, "tr")
        return [(int(r["data-run"]), int(r["data-round"])) for r in rows if "data-round" in r]

    page_one, page_two = shown(first.text), shown(second.text)
    assert len(page_one) == DEVICE_ROUNDS_PER_PAGE and len(page_two) == 10
    assert page_one[0] == (newer, DEVICE_ROUNDS_PER_PAGE) and page_two[-1] == (older, 1)
    assert page_one + page_two == sorted(page_one + page_two, reverse=True)
    assert len(set(page_one + page_two)) == DEVICE_ROUNDS_PER_PAGE + 10
    assert f"{DEVICE_ROUNDS_PER_PAGE + 10} round(s) in all" in first.text
    assert not elements(second.text, "a", id="device-rounds-next")
    assert elements(second.text, "a", id="device-rounds-first")
    assert not elements(first.text, "a", id="device-rounds-first")
    assert bad_cursor.status_code == 422 and "cursor" in bad_cursor.text
