"""End to end: the real coordinator process, real Flower simulation runs, a real database."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.coordinator import crud
from server.coordinator.core.db import make_engine, make_session_factory
from tests.utils.service import Coordinator, kill_run_jobs, run_job_pids, wait_for
from tests.utils.token import service_token

pytestmark = pytest.mark.slow

RUN_BODY = {
    "task": "digits",
    "method": "apt",
    "clients": 3,
    "fraction": 1.0,
    "alpha": 0.5,
    "seed": 0,
}


@pytest.fixture()
def coordinator(tmp_path: Path) -> Iterator[Coordinator]:
    c = Coordinator(tmp_path)
    yield c
    c.stop()
    kill_run_jobs(tmp_path)


def _run(api, run_id: int) -> dict:  # type: ignore[no-untyped-def]
    return api.get(f"/runs/{run_id}").json()


def test_policy_push_reaches_every_device_from_next_round(coordinator: Coordinator) -> None:
    # Prepare
    coordinator.start()
    admin = coordinator.client(service_token(coordinator, role="admin"))
    run_id = admin.post("/runs", json={**RUN_BODY, "rounds": 4}).json()["id"]
    wait_for(lambda: _run(admin, run_id)["current_round"] >= 1, 240, "round 1")

    # Execute: the admin narrows the bit range after round 1
    resp = admin.put("/policy", json={"bits_min": 5, "bits_max": 9, "note": "cap"})
    assert resp.status_code == 200, resp.text
    new_version = resp.json()["version"]
    done = wait_for(
        lambda: (r := _run(admin, run_id))["status"] != "running" and r, 400, "the run to finish"
    )

    # Assert: from the first round that trained with it, every device used the new version
    assert done["status"] == "completed", done
    rounds = admin.get(f"/runs/{run_id}/rounds").json()["data"]
    versions = [r["policy_version"] for r in rounds]
    assert versions[0] == new_version - 1 and versions[-1] == new_version
    first_new = versions.index(new_version)
    assert all(v == new_version for v in versions[first_new:])
    engine = make_engine(coordinator.env["APTFLEET_DATABASE_URL"])
    with make_session_factory(engine)() as session:
        rows = crud.list_client_rounds(session=session, run_id=run_id)
        layers = crud.page_layer_precision(session=session, run_id=run_id, limit=1000).data
    engine.dispose()
    late = [r for r in rows if r.round >= rounds[first_new]["round"]]
    assert late and all(r.policy_version == new_version for r in late)
    late_bits = [x["bits"] for x in layers if x["round"] >= rounds[first_new]["round"]]
    assert late_bits and all(5 <= b <= 9 for b in late_bits)


def test_restart_mid_run_keeps_history_then_resume_completes_every_round_once(
    coordinator: Coordinator,
) -> None:
    # Prepare
    coordinator.start()
    operator = coordinator.client(service_token(coordinator, role="operator"))
    run_id = operator.post("/runs", json={**RUN_BODY, "rounds": 5}).json()["id"]
    wait_for(lambda: _run(operator, run_id)["current_round"] >= 1, 240, "round 1")

    # Execute: crash the service, then start it again on the same database
    coordinator.kill()
    coordinator.start()

    # Assert: nothing lost, the run is marked interrupted, the orphaned job adds nothing
    assert _run(operator, run_id)["status"] == "interrupted"
    rounds = operator.get(f"/runs/{run_id}/rounds").json()["data"]
    assert len(rounds) >= 1 and [r["round"] for r in rounds] == list(range(1, len(rounds) + 1))
    assert operator.get(f"/runs/{run_id}/precision").json()["count"] > 0
    wait_for(lambda: not run_job_pids(coordinator.data_dir), 180, "the orphaned job to exit")
    kept = operator.get(f"/runs/{run_id}/rounds").json()["data"]
    assert [r["round"] for r in kept] == list(range(1, len(kept) + 1))

    # Execute: resume from the latest checkpoint
    resp = operator.post(f"/runs/{run_id}/resume")
    assert resp.status_code == 200, resp.text
    # the resumed run is queued first: waiting only out of pending/running ended the wait
    # at once whenever the launcher had not admitted it yet
    done = wait_for(
        lambda: (
            (r := _run(operator, run_id))["status"] not in ("queued", "pending", "running") and r
        ),
        400,
        "the resumed run to finish",
    )

    # Assert: every round exactly once, the resumed ones continue the numbering
    assert done["status"] == "completed", done
    final = operator.get(f"/runs/{run_id}/rounds").json()["data"]
    assert [r["round"] for r in final] == [1, 2, 3, 4, 5]
    assert final[: len(kept)] == kept
    assert operator.post(f"/runs/{run_id}/resume").status_code == 409


def _listening_sockets() -> list[tuple[str, int]]:
    """(local address, pid) of every listening TCP socket (``ss -ltnpH``)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        local = fields[3]
        found += [(local.rsplit(":", 1)[0], int(pid)) for pid in re.findall(r"pid=(\d+)", line)]
    return found


def _processes_of(data_dir: Path, exclude: int) -> set[int]:
    """PIDs whose environment names ``data_dir``, except the coordinator.

    The run's job and every Ray process it started inherit it.
    """
    marker = f"APTFLEET_DATA_DIR={data_dir}".encode()
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != exclude:
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    pids.add(int(entry.name))
            except OSError:
                continue
    return pids


def test_run_ray_processes_listen_on_loopback_only(coordinator: Coordinator) -> None:
    # Prepare
    coordinator.start()
    operator = coordinator.client(service_token(coordinator, role="operator"))
    run_id = operator.post("/runs", json={**RUN_BODY, "clients": 2, "rounds": 3}).json()["id"]
    wait_for(lambda: _run(operator, run_id)["current_round"] >= 1, 240, "round 1")

    # Execute
    pids = _processes_of(coordinator.data_dir, exclude=coordinator.pid)
    sockets = [(addr, pid) for addr, pid in _listening_sockets() if pid in pids]
    operator.post(f"/runs/{run_id}/stop")

    # Assert: Ray's GCS, raylet and workers listen, and only on 127.0.0.1
    assert len(sockets) >= 3, sockets
    assert {addr for addr, _ in sockets} <= {"127.0.0.1", "[::ffff:127.0.0.1]"}, sockets
