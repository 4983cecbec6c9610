"""Concurrent writes against a real coordinator process: no 500 on SQLite or PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from server.coordinator.core.db import begin_write, make_engine, make_session_factory
from server.coordinator.tables import Run
from tests.utils.db import BACKENDS, empty_database
from tests.utils.service import Coordinator, kill_run_jobs
from tests.utils.token import service_token

RUN_BODY = {"task": "digits", "method": "apt", "clients": 3, "rounds": 2}
#: Simultaneous requests per burst: enough to collide, few enough for 2 shared cores.
BURST = 8


@pytest.fixture(scope="module", params=BACKENDS)
def coordinator(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Coordinator]:
    """One ``aptfleet serve`` per backend, shared by the burst tests of that backend.

    They stay independent on it: one writes only runs (and counts them), the other only
    policy versions (and compares them with each other).
    """
    data_dir = tmp_path_factory.mktemp(f"coordinator-{request.param}")
    with empty_database(request.param, data_dir) as url:
        c = Coordinator(data_dir, database_url=url)
        c.env["APTFLEET_MAX_ACTIVE_RUNS"] = "0"  # hold every run queued: no Ray here
        c.start()
        try:
            yield c
        finally:
            c.stop()
            kill_run_jobs(data_dir)


def _burst(send: Callable[[int], httpx.Response]) -> list[httpx.Response]:
    """``send(i)`` for i in range(BURST), all released at once from their own threads."""
    barrier = threading.Barrier(BURST)
    out: list[httpx.Response | None] = [None] * BURST

    def worker(i: int) -> None:
        barrier.wait()
        out[i] = send(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(BURST)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(r is not None for r in out)
    return [r for r in out if r is not None]


def test_create_run_concurrent_burst_all_queued_none_5xx(coordinator: Coordinator) -> None:
    # Prepare
    api = coordinator.client(service_token(coordinator, role="operator"), timeout=60)

    # Execute
    responses = _burst(lambda i: api.post("/runs", json={**RUN_BODY, "seed": i}))

    # Assert: every run stored and queued, in distinct queue places
    assert [r.status_code for r in responses] == [201] * BURST, [r.text for r in responses]
    runs = api.get("/runs").json()["data"]
    assert len(runs) == BURST and {r["status"] for r in runs} == {"queued"}
    assert sorted(r["queue_position"] for r in runs) == list(range(1, BURST + 1))


def test_update_policy_concurrent_burst_200_or_409_none_5xx(coordinator: Coordinator) -> None:
    # Prepare
    admin = coordinator.client(service_token(coordinator, role="admin"), timeout=60)

    # Execute
    responses = _burst(
        lambda i: admin.put("/policy", json={"bits_max": 12 + i % 4, "note": f"writer {i}"})
    )

    # Assert: a version conflict is a 409, never a 500; the winners got distinct versions
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 409} and 200 in codes, [r.text for r in responses]
    versions = [r.json()["version"] for r in responses if r.status_code == 200]
    assert len(set(versions)) == len(versions)
    assert admin.get("/policy").json()["version"] == max(versions)


def test_begin_write_waits_for_a_held_lock_instead_of_failing(tmp_path: Path) -> None:
    # Prepare: a run, and a second connection that holds SQLite's write lock for 1.5 s
    from server.coordinator.services.startup import init_db

    url = f"sqlite:///{tmp_path / 'lock.db'}"
    init_db(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    with factory() as session:
        session.add(
            Run(
                task="digits",
                method="apt",
                clients=1,
                fraction=1.0,
                rounds=1,
                alpha=1.0,
                seed=0,
                settings={},
                status="queued",
                current_round=0,
            )
        )
        session.commit()
    holder = factory()
    begin_write(holder)
    holder.get(Run, 1)  # BEGIN IMMEDIATE: the write lock is held from here
    release = threading.Timer(1.5, holder.commit)
    release.start()

    # Execute: a reader-then-writer in a write transaction, as the job's first status write
    try:
        with factory() as session:
            begin_write(session)
            run = session.get(Run, 1)
            assert run is not None
            run.status = "pending"
            session.commit()
    finally:
        release.join()
        holder.close()

    # Assert
    with factory() as session:
        run = session.get(Run, 1)
        assert run is not None and run.status == "pending"
    engine.dispose()
