"""A one-machine deployment-engine fleet: a real SuperLink and N SuperNodes on loopback.

``up`` starts ``flower-superlink`` on a free port and N ``flower-supernode`` processes
(each with its own FLWR_HOME and node config), writes their PIDs to a state file and a
Flower CLI config (``<state>/cli/config.toml``, connection ``aptfleet``); ``run`` submits
the app with ``flwr run`` and waits on ``flwr list --run-id ID --format json`` (the exit
code of ``flwr run`` does not reflect the run's outcome); ``down`` stops every process it
started, by process group, and anything they left on the managed local-SuperLink port.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from apt_core.federated.device_class import DEFAULT_DEVICE_CLASS
from server.flower.processes import (
    REPO_ROOT,
    FleetError,
    alive,
    executable,
    is_group_leader,
    start_process,
    stop_group,
    superlink_pids,
)
from server.flower.submission import (
    CONNECTION,
    RunOutcome,
    ServerSettingsLike,
    flwr,
    submit,
    submit_to_superlink,
    write_cli_config,
)
from server.ports import free_port

__all__ = [
    "CONNECTION", "DEFAULT_STATE_DIR", "LOCAL_SUPERLINK_PORT", "FleetError", "FleetState",
    "Proc", "RunOutcome", "ServerSettingsLike", "down", "run_app", "run_log", "status",
    "submit_to_superlink", "up",
]

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path(os.environ.get("APTFLEET_FLEET_DIR", "/tmp/aptfleet-fleet"))
#: Port of the SuperLink that ``flwr`` spawns for the ``:local:`` connection.
LOCAL_SUPERLINK_PORT = 39091


@dataclass
class Proc:
    """One process the fleet started (its own session: pid == process group id)."""

    role: str
    pid: int
    port: int
    flwr_home: str
    log_file: str
    node_config: str = ""


@dataclass
class FleetState:
    """What ``up`` started; saved as JSON in ``<state_dir>/fleet.json``."""

    state_dir: str
    superlink_port: int
    procs: list[Proc] = field(default_factory=list)

    @property
    def cli_home(self) -> Path:
        """FLWR_HOME of the ``flwr`` CLI (holds the connection config)."""
        return Path(self.state_dir) / "cli"

    def save(self) -> None:
        """Write the state file."""
        (Path(self.state_dir) / "fleet.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, state_dir: Path) -> FleetState | None:
        """Read the state file, if any."""
        path = state_dir / "fleet.json"
        if not path.exists():
            return None
        d = json.loads(path.read_text())
        return cls(d["state_dir"], d["superlink_port"], [Proc(**p) for p in d["procs"]])


def _start(role: str, args: list[str], home: Path, port: int, node_config: str = "") -> Proc:
    pid, log_file = start_process(args, home, role)
    return Proc(role, pid, port, str(home), str(log_file), node_config)


def _wait_health(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/health"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:  # noqa: S310 (loopback)
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise FleetError(f"The SuperLink did not answer {url} within {timeout:.0f} s.")


def up(nodes: int, state_dir: Path = DEFAULT_STATE_DIR,
       device_classes: Sequence[str] | None = None,
       node_config: Mapping[int, Mapping[str, Any]] | None = None,
       timeout: float = 60.0) -> FleetState:
    """Start a SuperLink and ``nodes`` SuperNodes on loopback.

    Parameters
    ----------
    nodes : int
        Number of SuperNodes (partition ids 0..nodes-1, num-partitions = nodes).
    state_dir : Path (default: $APTFLEET_FLEET_DIR or /tmp/aptfleet-fleet)
        Holds the state file, logs and one FLWR_HOME per process.
    device_classes : Sequence[str] | None (default: None -> all "standard")
        Device class per node, cycled.
    node_config : Mapping[int, Mapping[str, Any]] | None (default: None)
        Extra node-config entries per partition id (e.g. ``{1: {"fail-at-round": 2}}``).
    timeout : float (default: 60.0)
        Seconds to wait for the SuperLink to become healthy.
    """
    if nodes < 1:
        raise FleetError(f"nodes={nodes} must be >= 1.")
    state_dir = state_dir.resolve()
    old = FleetState.load(state_dir)
    if old is not None and any(alive(p.pid) for p in old.procs):
        raise FleetError(f"A fleet is already up in {state_dir}; run 'fleet down' first.")
    state_dir.mkdir(parents=True, exist_ok=True)
    state = FleetState(str(state_dir), free_port())
    try:
        _start_superlink(state, timeout)
        classes = list(device_classes or [DEFAULT_DEVICE_CLASS])
        for i in range(nodes):
            extra = {"device-class": classes[i % len(classes)],
                     **dict((node_config or {}).get(i, {}))}
            _start_supernode(state, i, nodes, extra)
        write_cli_config(state.cli_home, f"127.0.0.1:{state.superlink_port}")
        _check_started(state)
    except BaseException:
        down(state_dir)
        raise
    log.info("Fleet up: SuperLink on 127.0.0.1:%s, %s SuperNodes, state in %s",
             state.superlink_port, nodes, state_dir)
    return state


def _start_superlink(state: FleetState, timeout: float) -> None:
    """Start the SuperLink on the state's port and wait until it is healthy."""
    port = state.superlink_port
    state.procs.append(_start("superlink", [
        executable("flower-superlink"), "--insecure", "--disable-runtime-dependency-installation",
        "--host", "127.0.0.1", "--port", str(port)], Path(state.state_dir) / "link", port))
    state.save()
    _wait_health(port, timeout)


def _start_supernode(state: FleetState, i: int, nodes: int, extra: Mapping[str, Any]) -> None:
    """Start SuperNode ``i`` of ``nodes`` with node config ``extra`` on top of its partition."""
    cfg = " ".join([f"partition-id={i}", f"num-partitions={nodes}"]
                   + [f"{k}={json.dumps(v)}" for k, v in extra.items()])
    nport = free_port()
    state.procs.append(_start(f"supernode-{i}", [
        executable("flower-supernode"), "--insecure", "--superlink",
        f"127.0.0.1:{state.superlink_port}", "--host", "127.0.0.1", "--port", str(nport),
        "--node-config", cfg], Path(state.state_dir) / f"node{i}", nport, cfg))
    state.save()


def _check_started(state: FleetState) -> None:
    """Fail when a process died right after its start (bad flags, port taken, ...)."""
    time.sleep(1.0)
    dead = [p.role for p in state.procs if not alive(p.pid)]
    if dead:
        raise FleetError(f"Fleet processes exited right after start: {dead}; see the logs "
                         f"in {state.state_dir}.")


def down(state_dir: Path = DEFAULT_STATE_DIR, grace: float = 15.0) -> list[int]:
    """Stop every process the fleet started (SuperNodes first); returns their PIDs."""
    state_dir = state_dir.resolve()
    state = FleetState.load(state_dir)
    if state is None:
        return []
    pids = [p.pid for p in state.procs]
    for p in sorted(state.procs, key=lambda p: p.role == "superlink"):
        stop_group(p.pid, grace)
    _stop_local_superlink(state)
    (state_dir / "fleet.json").unlink(missing_ok=True)
    log.info("Fleet down: stopped %s processes.", len(pids))
    return pids


def _stop_local_superlink(state: FleetState) -> None:
    """Kill a managed local SuperLink (:39091) if one runs with our CLI FLWR_HOME."""
    for pid in superlink_pids(str(state.cli_home)):
        stop_group(pid, 10.0) if is_group_leader(pid) else os.kill(pid, signal.SIGTERM)


def status(state_dir: Path = DEFAULT_STATE_DIR) -> dict[str, Any]:
    """Each started process with whether it is still alive."""
    state = FleetState.load(state_dir.resolve())
    if state is None:
        return {"up": False, "procs": []}
    procs = [{**asdict(p), "alive": alive(p.pid)} for p in state.procs]
    return {"up": any(p["alive"] for p in procs), "superlink_port": state.superlink_port,
            "procs": procs}


def run_app(run_config: Mapping[str, Any] | None = None, state_dir: Path = DEFAULT_STATE_DIR,
            app_dir: Path = REPO_ROOT, timeout: float = 600.0) -> RunOutcome:
    """Submit the app to the fleet's SuperLink and wait until the run finishes.

    ``run_config`` overrides go through ``flwr run -c``; the SuperLink rejects keys that are
    not in ``[tool.flwr.app.config]`` of the app's pyproject.toml.
    """
    state = FleetState.load(state_dir.resolve())
    if state is None:
        raise FleetError(f"No fleet is up in {state_dir}; run 'fleet up' first.")
    return submit(state.cli_home, run_config or {}, app_dir, timeout)


def run_log(run_id: int, state_dir: Path = DEFAULT_STATE_DIR) -> str:
    """The ServerApp log of a run (``flwr log ID --show``)."""
    state = FleetState.load(state_dir.resolve())
    if state is None:
        raise FleetError(f"No fleet is up in {state_dir}.")
    res = flwr(state.cli_home, ["log", str(run_id), CONNECTION, "--show"], 60)
    return res.stdout + res.stderr
