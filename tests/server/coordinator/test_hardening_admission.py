"""Hardening of request admission: bursts, stalled bodies and the per-client cap.

No pool deadlock under a burst, stalled bodies time out, and a per-client cap on requests
in flight.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from server.coordinator import crud
from server.coordinator.core.config import Settings
from server.coordinator.core.db import make_engine, make_session_factory
from server.coordinator.main import create_app
from server.coordinator.services.startup import init_db

#: More requests in flight than AnyIO's 40 threads plus the 5 + 10 pooled connections.
BURST = 80


def test_concurrent_burst_answered_without_pool_deadlock(tmp_path: Path) -> None:
    # Prepare
    url = f"sqlite:///{tmp_path / 'burst.db'}"
    init_db(url)
    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        token = crud.create_token(session=session, role="operator")
        session.commit()
    engine.dispose()
    app = create_app(Settings(DATABASE_URL=url, DATA_DIR=tmp_path))

    async def burst() -> set[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://coordinator",
            headers={"Authorization": f"Bearer {token}"},
        ) as api:
            responses = await asyncio.wait_for(
                asyncio.gather(*(api.get("/api/v1/runs") for _ in range(BURST))), timeout=5
            )
        return {r.status_code for r in responses}

    # Execute: each request alone takes milliseconds
    statuses = asyncio.run(burst())

    # Assert
    assert statuses == {200}


def _scope(method: str, path: str, client: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "server": ("127.0.0.1", 8080),
        "client": (client, 40000),
        "state": {},
        "headers": [
            (b"host", b"coordinator"),
            (b"content-type", b"application/json"),
            (b"content-length", b"1000"),
        ],
    }


async def _call(app: FastAPI, scope: dict[str, Any], receive: Any) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def _stalled_body_receiver() -> Any:
    first = True

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": b"{", "more_body": True}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return receive


async def _no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


@pytest.mark.timeout(30)
def test_stalled_bodies_hold_no_admission_slot_health_answers(db_url: str, tmp_path: Path) -> None:
    # Prepare: far more stalled bodies than admission slots, each from its own address
    app = create_app(Settings(DATABASE_URL=db_url, DATA_DIR=tmp_path, BODY_TIMEOUT=60))

    async def scenario() -> list[dict[str, Any]]:
        stalled = [
            asyncio.create_task(
                _call(app, _scope("POST", "/api/v1/runs", f"10.0.0.{i}"), _stalled_body_receiver())
            )
            for i in range(40)
        ]
        await asyncio.sleep(0.2)
        try:
            return await asyncio.wait_for(
                _call(app, _scope("GET", "/healthz", "10.0.1.1"), _no_body), timeout=5
            )
        finally:
            for task in stalled:
                task.cancel()
            await asyncio.gather(*stalled, return_exceptions=True)

    # Execute
    sent = asyncio.run(scenario())

    # Assert
    assert sent[0]["status"] == 200


@pytest.mark.timeout(30)
def test_stalled_body_408_names_setting(db_url: str, tmp_path: Path) -> None:
    # Prepare
    app = create_app(Settings(DATABASE_URL=db_url, DATA_DIR=tmp_path, BODY_TIMEOUT=0.2))

    # Execute
    sent = asyncio.run(
        _call(app, _scope("POST", "/api/v1/runs", "10.0.0.1"), _stalled_body_receiver())
    )

    # Assert
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    assert b"APTFLEET_BODY_TIMEOUT" in sent[1]["body"]


@pytest.mark.timeout(30)
def test_requests_over_per_client_cap_429_other_clients_served(db_url: str, tmp_path: Path) -> None:
    # Prepare
    app = create_app(Settings(DATABASE_URL=db_url, DATA_DIR=tmp_path, MAX_REQUESTS_PER_CLIENT=3))

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        stalled = [
            asyncio.create_task(
                _call(app, _scope("POST", "/api/v1/runs", "10.0.0.9"), _stalled_body_receiver())
            )
            for _ in range(3)
        ]
        await asyncio.sleep(0.1)
        try:
            over = await asyncio.wait_for(
                _call(app, _scope("GET", "/healthz", "10.0.0.9"), _no_body), timeout=5
            )
            other = await asyncio.wait_for(
                _call(app, _scope("GET", "/healthz", "10.0.0.10"), _no_body), timeout=5
            )
        finally:
            for task in stalled:
                task.cancel()
            await asyncio.gather(*stalled, return_exceptions=True)
        return over, other

    # Execute
    over, other = asyncio.run(scenario())

    # Assert
    assert over[0]["status"] == 429
    assert (b"retry-after", b"1") in over[0]["headers"]
    assert b"10.0.0.9" in over[1]["body"]
    assert other[0]["status"] == 200
