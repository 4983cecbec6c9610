"""Keyset pagination of every list endpoint, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from server.coordinator import crud
from server.coordinator.core.pagination import encode_cursor
from server.coordinator.tables import Run
from tests.utils.run import create_random_run, make_round_record
from tests.utils.token import token_headers

NODES = (11, 12, 13)
LAYERS = ("conv1", "fc")
ROUNDS = 3


def _run_with_rounds(db: Session) -> Run:
    run = create_random_run(db, status="running")
    for r in range(1, ROUNDS + 1):
        crud.record_round(
            session=db, run_id=run.id, record=make_round_record(r, nodes=NODES, layers=LAYERS)
        )
    db.commit()
    return run


def _walk(
    client: TestClient,
    url: str,
    headers: dict[str, str],
    limit: int,
    filters: dict[str, Any] | None = None,
) -> list[dict]:
    """Every page of ``url`` following ``next_cursor``; each page's count is the total."""
    pages, cursor = [], None
    while True:
        params: dict[str, Any] = {**(filters or {}), "limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        response = client.get(url, params=params, headers=headers)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        cursor = pages[-1]["next_cursor"]
        if cursor is None:
            break
        assert len(pages) < 100, "the cursor does not advance"
    rows = [row for page in pages for row in page["data"]]
    assert {page["count"] for page in pages} == {len(rows)}
    assert all(len(page["data"]) == limit for page in pages[:-1])
    return rows


#: endpoint (``{run}`` is the run id), rows expected, key of a row in list order
ENDPOINTS = {
    "rounds": ("/api/v1/runs/{run}/rounds", ROUNDS, lambda r: (r["round"],)),
    "clients": (
        "/api/v1/runs/{run}/clients",
        ROUNDS * len(NODES),
        lambda r: (r["round"], r["device_id"]),
    ),
    "precision": (
        "/api/v1/runs/{run}/precision",
        ROUNDS * len(NODES) * len(LAYERS),
        lambda r: (r["round"], r["device_id"], r["layer"]),
    ),
    "summary": (
        "/api/v1/runs/{run}/precision/summary",
        ROUNDS * len(LAYERS),
        lambda r: (r["round"], r["layer"]),
    ),
    "devices": ("/api/v1/devices", len(NODES), lambda r: (-r["id"],)),
    "policy": ("/api/v1/policy/history", 1, lambda r: (-r["version"],)),
}


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
@pytest.mark.parametrize("limit", [1, 2, 1000])
def test_list_endpoint_pages_cover_every_row_once_in_order(
    client: TestClient, db: Session, operator_headers: dict[str, str], name: str, limit: int
) -> None:
    # Prepare
    run = _run_with_rounds(db)
    url, expected, key = ENDPOINTS[name]

    # Execute
    rows = _walk(client, url.format(run=run.id), operator_headers, limit)

    # Assert
    keys = [key(r) for r in rows]
    assert len(rows) == expected
    assert keys == sorted(keys) and len(set(keys)) == expected


def test_read_runs_pages_newest_first(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    ids = [create_random_run(db).id for _ in range(5)]

    # Execute
    rows = _walk(client, "/api/v1/runs", operator_headers, limit=2)

    # Assert
    assert [r["id"] for r in rows] == sorted(ids, reverse=True)


def test_read_tokens_pages_oldest_first(client: TestClient, db: Session) -> None:
    # Prepare
    headers = token_headers(db, role="admin", name="alice")
    for i in range(4):
        token_headers(db, role="operator", name=f"op{i}")

    # Execute
    rows = _walk(client, "/api/v1/tokens", headers, limit=2)

    # Assert
    assert [r["name"] for r in rows] == ["alice", "op0", "op1", "op2", "op3"]


def test_read_clients_device_filter_pages_one_device(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    run = _run_with_rounds(db)
    devices = client.get("/api/v1/devices", headers=operator_headers).json()["data"]
    device = next(d for d in devices if d["node_id"] == 12)

    # Execute
    url = f"/api/v1/runs/{run.id}/clients"
    rows = _walk(client, url, operator_headers, limit=2, filters={"device": device["id"]})

    # Assert
    assert [(r["round"], r["device_id"]) for r in rows] == [
        (r, device["id"]) for r in range(1, ROUNDS + 1)
    ]


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor!",
        "e30",  # base64 of {}
        encode_cursor([1]),  # a key of the wrong length
        encode_cursor(["1", 2]),  # a key of the wrong types
        encode_cursor([True, 2]),
        "A" * 600,
    ],
)
def test_read_clients_bad_cursor_names_cursor(
    client: TestClient, db: Session, operator_headers: dict[str, str], cursor: str
) -> None:
    # Prepare
    run = _run_with_rounds(db)

    # Execute
    response = client.get(
        f"/api/v1/runs/{run.id}/clients", params={"cursor": cursor}, headers=operator_headers
    )

    # Assert
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [["query", "cursor"]]


@pytest.mark.parametrize("url", ["/api/v1/runs", "/api/v1/devices", "/api/v1/runs/{run}/clients"])
@pytest.mark.parametrize("limit", [0, 1001])
def test_list_endpoint_limit_out_of_range_names_limit(
    client: TestClient, db: Session, operator_headers: dict[str, str], url: str, limit: int
) -> None:
    # Prepare
    run = create_random_run(db)

    # Execute
    response = client.get(url.format(run=run.id), params={"limit": limit}, headers=operator_headers)

    # Assert
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [["query", "limit"]]


def test_read_precision_count_from_summary_matches_filters(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    run = _run_with_rounds(db)

    # Execute
    body = client.get(
        f"/api/v1/runs/{run.id}/precision",
        params={"layer": "fc", "from_round": 2, "limit": 1},
        headers=operator_headers,
    ).json()

    # Assert: rounds 2..3, every node, one layer
    assert body["count"] == (ROUNDS - 1) * len(NODES)
    assert body["next_cursor"] is not None
