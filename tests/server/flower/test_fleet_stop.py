"""``flwr stop`` from a user's own ``flwr`` (FLWR_HOME: the fleet's CLI home) ends ClientApps."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from server.flower import fleet
from server.flower.processes import REPO_ROOT
from server.flower.run_watcher import clientapp_pids
from server.flower.submission import flwr, json_out, run_status


def _wait(what: str, cond, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(1.0)
    raise TimeoutError(f"{what} within {timeout} s")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_flwr_stop_ends_the_clientapps(tmp_path: Path) -> None:
    # Prepare: a run whose local round takes many minutes (5,000 epochs of the digits MLP;
    # on the integer kernels 300 epochs ended within a minute, before the watcher's turn)
    state = fleet.up(2, tmp_path / "fleet", insecure=True)
    nodes = [p.pid for p in state.procs if p.role.startswith("supernode")]
    try:
        config = ["-c", "num-server-rounds=1", "-c", "local-epochs=5000", "-c", 'arch="mlp"']
        res = flwr(state.cli_home, ["run", str(REPO_ROOT), "--format", "json", *config], 120)
        run_id = int(json_out(res.stdout)["run-id"])
        # the ClientApp processes that answer the sampler's identify query come and go in
        # seconds; the training ones are the two that stay
        seen: dict[int, float] = {}

        def training_for_15_s() -> bool:
            now, pids = time.monotonic(), set(clientapp_pids(nodes))
            for pid in set(seen) - pids:
                del seen[pid]
            for pid in pids:
                seen.setdefault(pid, now)
            return sum(now - t >= 15.0 for t in seen.values()) == 2

        _wait("both ClientApps training", training_for_15_s, 400)
        training = clientapp_pids(nodes)

        # Execute: what a user types, with FLWR_HOME pointing at the fleet's CLI home
        stop = flwr(state.cli_home, ["stop", str(run_id)], 60)
        started = time.monotonic()
        _wait("ClientApps ended after flwr stop", lambda: not clientapp_pids(nodes), 120)
        ended_after = time.monotonic() - started
        status, _ = run_status(state.cli_home, run_id)
    finally:
        fleet.down(tmp_path / "fleet")

    # Assert
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert len(training) == 2 and status == "finished:stopped"
    assert ended_after < 120
    assert "asked ClientApp processes" in (state.cli_home / "run-watcher.log").read_text()
