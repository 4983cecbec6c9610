"""The deployment topology end to end, as plain processes on 127.0.0.1.

Coordinator (``aptfleet serve``) on a database, a real ``flower-superlink`` and three
``flower-supernode`` processes of different device classes, secure as deployed (TLS with the
fleet's CA, SuperNode authentication, the coordinator verifying the SuperLink with
``APTFLEET_SUPERLINK_CA_FILE``); runs go through the REST API,
the coordinator's job submits the app to the SuperLink, and the ServerApp stores every
round in the coordinator's database.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.server.superlink.linkstate.utils import create_message_error_unavailable_res_message

from apt_core import federated as fed
from apt_core.config import PrecisionPolicy
from server.flower import fleet, processes
from server.flower.records import RoundReport
from server.flower.strategy import APTFedAvg
from tests.utils.db import postgres_database
from tests.utils.replies import FakeGrid, create_apt_reply, task_identity
from tests.utils.service import wait_for
from tests.utils.token import service_token
from tests.utils.topology import Topology, alive, local_superlink_pids, topology

CLASSES = ["mcu", "phone", "gateway"]
RUN_BODY = {
    "task": "digits",
    "method": "apt",
    "clients": 3,
    "fraction": 1.0,
    "rounds": 2,
    "alpha": 0.5,
    "seed": 0,
}


def _run(api: httpx.Client, run_id: int) -> dict:
    resp = api.get(f"/runs/{run_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def _wait_finished(api: httpx.Client, run_id: int, timeout: float) -> dict:
    return wait_for(
        lambda: (r := _run(api, run_id))["status"] not in ("pending", "running") and r,
        timeout,
        f"run {run_id} to finish",
        every=1.0,
    )


def _job_log(topo: Topology, run_id: int) -> str:
    path = topo.coordinator.data_dir / "runs" / f"run-{run_id}.log"
    return path.read_text(errors="replace")[-4000:] if path.exists() else "(no job log)"


def _assert_all_stopped(topo: Topology, tmp_path: Path, local_link_before: bool) -> None:
    survivors = sorted(pid for pid in topo.seen_pids if alive(pid))
    assert not survivors, f"processes of the topology survived: {survivors}"
    assert fleet.status(topo.fleet_dir) == {"up": False, "procs": []}
    assert not local_superlink_pids(str(tmp_path)), "a SuperLink with our FLWR_HOME is left"
    if not local_link_before:
        assert not processes.port_open(fleet.LOCAL_SUPERLINK_PORT), (
            f"a SuperLink on :{fleet.LOCAL_SUPERLINK_PORT} appeared during the test"
        )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_topology_postgres_coordinator_superlink_three_supernodes(tmp_path: Path) -> None:
    # Prepare
    local_link_before = processes.port_open(fleet.LOCAL_SUPERLINK_PORT)
    started = time.monotonic()
    with postgres_database() as url, topology(tmp_path, CLASSES, database_url=url) as topo:
        admin = topo.coordinator.client(service_token(topo.coordinator, role="admin"))
        # the mcu class is capped at 8 bits; everyone else starts at 12, so a device whose
        # override were ignored would show bits > 8
        resp = admin.put(
            "/policy",
            json={"bits_init": 12, "overrides": {"mcu": {"bits_max": 8}}, "note": "cap mcu"},
        )
        assert resp.status_code == 200, resp.text
        version = resp.json()["version"]

        # Execute
        resp = admin.post("/runs", json=RUN_BODY)
        assert resp.status_code == 201, resp.text
        run_id = resp.json()["id"]
        wait_for(lambda: _run(admin, run_id)["status"] != "pending", 60, "the job to start")
        topo.note_pids()
        done = _wait_finished(admin, run_id, 420)
        topo.note_pids()
        rounds = admin.get(f"/runs/{run_id}/rounds").json()["data"]
        clients = admin.get(f"/runs/{run_id}/clients").json()["data"]
        layers = admin.get(f"/runs/{run_id}/precision", params={"limit": 1000}).json()
        devices = admin.get("/devices").json()["data"]
        job_log = _job_log(topo, run_id)
    elapsed = time.monotonic() - started

    # Assert: two rounds with all three devices, on the policy version set before the run
    assert done["status"] == "completed", (done, job_log)
    assert done["current_round"] == 2 and done["savings"] is not None
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(
        r["participants"] == 3 and r["failures"] == 0 and r["rejections"] == 0 for r in rounds
    ), rounds
    assert all(r["policy_version"] == version for r in rounds)
    assert len(clients) == 6 and all(c["policy_version"] == version for c in clients)
    # every device in GET /devices with its class, active, and per-layer precision
    assert sorted(d["device_class"] for d in devices) == sorted(CLASSES), devices
    assert all(d["status"] == "active" for d in devices), devices
    class_of = {d["id"]: d["device_class"] for d in devices}
    by_class: dict[str, list[int]] = {}
    for row in layers["data"]:
        by_class.setdefault(class_of[row["device_id"]], []).append(row["bits"])
    assert set(by_class) == set(CLASSES)
    n_layers = len(rounds[0]["global_bits"])
    assert n_layers >= 2 and all(len(b) == 2 * n_layers for b in by_class.values()), by_class
    # the mcu override is respected; the other classes were not capped
    assert max(by_class["mcu"]) <= 8, by_class
    assert max(by_class["phone"] + by_class["gateway"]) > 8, by_class
    _assert_all_stopped(topo, tmp_path, local_link_before)
    print(f"topology run: {elapsed:.0f} s, bits per class {by_class}")


#: Round timeout of the kill test: well above a normal deployment round here (~25 s on two
#: busy cores), and about the time the SuperLink needs to declare a dead SuperNode offline
#: (HEARTBEAT_PATIENCE 2 x the 30 s heartbeat interval after its last heartbeat, so 36-60 s
#: after the kill). Whichever comes first ends the round.
KILL_ROUND_TIMEOUT = 60
#: How a dead device's failure is worded: Flower's "node unavailable" error reply, or no
#: reply before the round timeout.
OFFLINE_REASONS = ("The device went offline", "The device sent no reply")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_supernode_killed_mid_round_round_completes_and_device_offline(tmp_path: Path) -> None:
    # Prepare
    local_link_before = processes.port_open(fleet.LOCAL_SUPERLINK_PORT)
    started = time.monotonic()
    env = {"APTFLEET_ROUND_TIMEOUT": str(KILL_ROUND_TIMEOUT)}
    with topology(tmp_path, CLASSES, env=env) as topo:
        operator = topo.coordinator.client(service_token(topo.coordinator, role="operator"))
        resp = operator.post("/runs", json=RUN_BODY)
        assert resp.status_code == 201, resp.text
        run_id = resp.json()["id"]
        wait_for(
            lambda: _run(operator, run_id)["current_round"] >= 1,
            300,
            "round 1 to be stored",
            every=0.5,
        )
        topo.note_pids()

        # Execute: kill the phone's SuperNode (whole process group) while round 2 runs
        topo.kill_supernode("phone")
        killed_at = time.monotonic()
        in_flight = operator.get(f"/runs/{run_id}/rounds").json()["count"]
        done = _wait_finished(operator, run_id, KILL_ROUND_TIMEOUT + 120)
        round2_s = time.monotonic() - killed_at
        rounds = operator.get(f"/runs/{run_id}/rounds").json()["data"]
        clients = operator.get(f"/runs/{run_id}/clients").json()["data"]
        devices = operator.get("/devices").json()["data"]
        job_log = _job_log(topo, run_id)
    elapsed = time.monotonic() - started

    # Assert: round 2 was in flight at the kill, and completed with the two others
    assert in_flight == 1, "round 2 was already stored when the SuperNode was killed"
    assert done["status"] == "completed", (done, job_log)
    assert [r["round"] for r in rounds] == [1, 2]
    assert (rounds[0]["participants"], rounds[0]["failures"]) == (3, 0), rounds[0]
    assert (rounds[1]["participants"], rounds[1]["failures"]) == (2, 1), rounds[1]
    assert rounds[1]["rejections"] == 0
    # the failure is the phone's, with a reason; no phantom device (the SuperLink's node id)
    assert sorted(d["device_class"] for d in devices) == sorted(CLASSES), devices
    by_class = {d["device_class"]: d for d in devices}
    phone = by_class["phone"]["id"]
    (failed,) = [c for c in clients if c["failure"]]
    assert (failed["round"], failed["device_id"]) == (2, phone), clients
    assert failed["failure"].startswith(OFFLINE_REASONS), failed
    assert [c["round"] for c in clients if c["device_id"] == phone] == [1, 2]
    assert by_class["phone"]["status"] == "offline", devices
    assert by_class["mcu"]["status"] == by_class["gateway"]["status"] == "active", devices
    _assert_all_stopped(topo, tmp_path, local_link_before)
    print(
        f"kill run: {elapsed:.0f} s, round 2 after the kill {round2_s:.0f} s, "
        f"failure: {failed['failure'][:90]!r}"
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["node-unavailable", "timeout"])
def test_dead_supernode_is_recorded_as_failure_under_its_node_and_class(how: str) -> None:
    # Prepare: round 1 with nodes 11 (mcu) and 12 (phone); in round 2 node 12 is dead: the
    # SuperLink answers for it once it missed its heartbeats (Flower's NODE_UNAVAILABLE
    # error reply, sent from the SuperLink's own node id), or the round times out first
    # (no reply at all). The Grid gives each pushed message its id.
    policy = PrecisionPolicy(bits_min=4, bits_max=12, check_every=5)
    records: list[RoundReport] = []
    strategy = APTFedAvg(
        settings=fed.RunSettings(task="digits", arch="mlp"),
        policy_provider=lambda: (1, policy, {}),
        recorder=records.append,
        evaluator=lambda m: (0.5, 1.0),
        min_available_nodes=1,
        min_train_nodes=1,
    )

    def reply(node: int, device_class: str) -> Message:
        model = fed.make_model("digits", "mlp", "apt", policy, seed=node)
        return create_apt_reply(model, 10, node_id=node, device_class=device_class)

    def send(server_round: int, arrays: ArrayRecord) -> dict[int, Message]:
        with task_identity():
            messages = list(
                strategy.configure_train(server_round, arrays, ConfigRecord(), FakeGrid([11, 12]))
            )
        for m in messages:
            m.metadata.__dict__["_message_id"] = f"r{server_round}-{m.metadata.dst_node_id}"
        return {m.metadata.dst_node_id: m for m in messages}

    send(1, strategy.initial_arrays())
    arrays, _ = strategy.aggregate_train(1, [reply(11, "mcu"), reply(12, "phone")])
    sent = send(2, arrays)
    # exactly what the SuperLink returns once node 12 missed its heartbeats
    unavailable = create_message_error_unavailable_res_message(sent[12].metadata, "node_unavail")
    assert unavailable.metadata.src_node_id not in (11, 12)
    replies = [reply(11, "mcu")] + ([unavailable] if how == "node-unavailable" else [])

    # Execute
    strategy.aggregate_train(2, replies)

    # Assert: recorded once, under node 12 and its class; nothing under the SuperLink's id
    record = records[-1]
    by_node = {c.node_id: c for c in record.clients}
    assert set(by_node) == {11, 12}
    assert (record.participants, record.failures) == (1, 1)
    assert by_node[12].failure is not None and by_node[12].failure.startswith(OFFLINE_REASONS)
    if how == "node-unavailable":
        assert by_node[12].failure.startswith("The device went offline")
        assert "Node Unavailable" in by_node[12].failure
    assert by_node[12].device_class == "phone"
