"""Fleet security end to end on loopback.

TLS and SuperNode authentication keep intruders out of the federation and out of the aggregate;
``--insecure`` is an explicit opt-in.
"""

from __future__ import annotations

import json
import logging
import tomllib
from pathlib import Path

import pytest

from server.flower import fleet, processes
from server.flower.certs import ensure_certs
from tests.utils.service import wait_for
from tests.utils.topology import alive, online_nodes

#: One short round: the run only has to show whose replies were aggregated.
RUN_CONFIG = {
    "num-server-rounds": 1,
    "min-nodes": 1,
    "local-epochs": 1,
    "arch": "mlp",
    "batch-size": 64,
    "fraction-evaluate": 0.0,
    "round-timeout": 120.0,
}


def _log(proc: fleet.Proc) -> str:
    return Path(proc.log_file).read_text(errors="replace")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_fleet_tls_only_authenticated_supernode_reaches_aggregate(tmp_path: Path) -> None:
    # Prepare: a secure fleet with one SuperNode, then four intruders against it:
    # a registered key but no CA (system trust store), a registered key and another CA,
    # our CA and a key that was never registered, and plain text (--insecure)
    state_dir = tmp_path / "fleet"
    other = ensure_certs(tmp_path / "other", 1)
    state = fleet.up(1, state_dir)
    procs = list(state.procs)
    try:
        certs = state.certs
        assert certs is not None
        good = state.procs[1]
        ensure_certs(certs.root, 3)  # node-1 and node-2 keys for the CA intruders
        registered = {i: fleet.register_node(state, certs.node(i).public) for i in (1, 2)}
        # what the compose `register` service runs: known keys are skipped, not an error
        again = fleet.register_keys(
            state.address, [certs.node(0).public, certs.node(1).public], ca_file=certs.ca_cert
        )
        intruders = {
            "no-ca": fleet.start_supernode(state, 1, 5, {}, key=certs.node(1)),
            "wrong-ca": fleet.start_supernode(
                state, 2, 5, {}, key=certs.node(2), root_certificates=other.ca_cert
            ),
            "unregistered": fleet.start_supernode(
                state, 3, 5, {}, key=other.node(0), root_certificates=certs.ca_cert
            ),
            "plain-text": fleet.start_supernode(state, 4, 5, {}, insecure=True),
        }
        procs = list(state.procs)
        # refused TLS handshakes and activations end a SuperNode (exit code 305); the
        # plain-text one keeps retrying, through the whole run
        wait_for(
            lambda: (
                not any(
                    processes.alive(p.pid) for name, p in intruders.items() if name != "plain-text"
                )
            ),
            120,
            "the refused SuperNodes to give up",
            every=1.0,
        )
        wait_for(
            lambda: [n["node-id"] for n in online_nodes(state)] == [str(good.node_id)],
            90,
            "the authenticated SuperNode to be online",
            every=1.0,
        )

        # Execute
        out = tmp_path / "out"
        outcome = fleet.run_app({**RUN_CONFIG, "out-dir": str(out)}, state_dir, timeout=400)
        known = {n["node-id"]: n["status"] for n in fleet.supernodes(state)}
        logs = {name: _log(p) for name, p in intruders.items()}
    finally:
        fleet.down(state_dir)

    # Assert: each intruder was refused, for its own reason, and never became a node
    assert list(again.values()) == [None, None]
    assert "CERTIFICATE_VERIFY_FAILED" in logs["no-ca"], logs["no-ca"][-2000:]
    assert "CERTIFICATE_VERIFY_FAILED" in logs["wrong-ca"], logs["wrong-ca"][-2000:]
    assert "Failed to activate SuperNode" in logs["unregistered"], logs["unregistered"][-2000:]
    assert "Connection attempt failed" in logs["plain-text"], logs["plain-text"][-2000:]
    assert known == {
        str(good.node_id): "online",
        **{str(registered[i]): "registered" for i in (1, 2)},
    }, known
    # the run trained on the authenticated SuperNode alone
    assert outcome.ok, outcome
    (record,) = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert (record["participants"], record["failures"], record["rejections"]) == (1, 0, 0)
    assert [c["node_id"] for c in record["clients"]] == [good.node_id], record["clients"]
    assert not any(alive(p.pid) for p in procs)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_fleet_insecure_is_opt_in_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare
    state_dir = tmp_path / "fleet"

    # Execute
    with caplog.at_level(logging.WARNING, logger="server.flower.fleet"):
        state = fleet.up(1, state_dir, insecure=True)
    try:
        wait_for(lambda: len(online_nodes(state)) == 1, 90, "the SuperNode to be online", every=1.0)
        link_args = Path(f"/proc/{state.procs[0].pid}/cmdline").read_bytes().split(b"\0")
        cli = tomllib.loads((state.cli_home / "config.toml").read_text())
    finally:
        fleet.down(state_dir)

    # Assert
    assert state.insecure and state.certs is None
    assert not (state_dir / "certs").exists()
    assert b"--insecure" in link_args and b"--enable-supernode-auth" not in link_args
    assert cli["superlink"][fleet.CONNECTION]["insecure"] is True
    assert any("INSECURE" in r.getMessage() for r in caplog.records)
