"""Fault: PostgreSQL restarts during a run; the service reconnects and stores no partial round."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.utils.service import Coordinator, kill_run_jobs, wait_for

pytestmark = pytest.mark.slow

ADMIN_URL = os.environ.get(
    "APTFLEET_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _cluster() -> list[str]:
    versions = sorted(os.listdir("/etc/postgresql")) if Path("/etc/postgresql").is_dir() else []
    if not versions or not Path("/usr/bin/pg_ctlcluster").exists():
        pytest.skip("no local PostgreSQL cluster managed by pg_ctlcluster")
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main"]


@pytest.fixture()
def pg_database() -> Iterator[str]:
    name = f"aptfleet_restart_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"PostgreSQL unreachable at {ADMIN_URL}: {exc}")
    yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_postgres_restart_mid_run_reconnects_without_partial_round(
    tmp_path: Path, pg_database: str
) -> None:
    # Prepare
    cluster = _cluster()
    coordinator = Coordinator(tmp_path, database_url=pg_database)
    try:
        coordinator.start()
        api = coordinator.client(coordinator.token("operator"))
        run_id = api.post(
            "/runs",
            json={
                "task": "digits",
                "method": "apt",
                "clients": 3,
                "fraction": 1.0,
                "rounds": 4,
                "alpha": 0.5,
                "seed": 0,
            },
        ).json()["id"]
        wait_for(lambda: api.get(f"/runs/{run_id}").json()["current_round"] >= 1, 240, "round 1")

        # Execute: take the database away for a while, watching /readyz
        subprocess.run([*cluster, "stop", "-m", "fast"], check=True, timeout=60)
        outage = []
        try:
            for _ in range(6):
                outage.append(httpx.get(f"{coordinator.base}/readyz", timeout=10).status_code)
                time.sleep(1.0)
        finally:
            subprocess.run([*cluster, "start"], check=True, timeout=60)
        wait_for(
            lambda: httpx.get(f"{coordinator.base}/readyz", timeout=10).status_code == 200,
            60,
            "/readyz after the restart",
        )
        done = wait_for(
            lambda: (
                (r := api.get(f"/runs/{run_id}").json())["status"] not in ("pending", "running")
                and r
            ),
            400,
            "the run to finish",
        )

        # Assert: the outage was reported, the run finished, every round stored once
        assert 503 in outage, outage
        assert done["status"] == "completed", done
        rounds = api.get(f"/runs/{run_id}/rounds").json()["data"]
        assert [r["round"] for r in rounds] == [1, 2, 3, 4]
        clients = api.get(f"/runs/{run_id}/clients").json()["data"]
        for r in rounds:  # each stored round is whole: its devices and their layers
            rows = [c for c in clients if c["round"] == r["round"]]
            assert len(rows) == r["participants"] + r["failures"] + r["rejections"]
        precision = api.get(f"/runs/{run_id}/precision").json()
        assert precision["count"] == sum(r["participants"] for r in rounds) * 4  # 4 layers
    finally:
        subprocess.run([*cluster, "start"], timeout=60)  # no-op when already running
        coordinator.stop()
        kill_run_jobs(tmp_path)
