"""A one-machine deployment-engine fleet: a real SuperLink and N SuperNodes on loopback.

``up`` starts ``flower-superlink`` on a free port and N ``flower-supernode`` processes
(each with its own FLWR_HOME and node config), writes their PIDs to a state file and a
Flower CLI config (``<state>/cli/config.toml``, connection ``aptfleet``); ``run`` submits
the app with ``flwr run`` and waits on ``flwr list --run-id ID --format json`` (the exit
code of ``flwr run`` does not reflect the run's outcome); ``down`` stops every process it
started, by process group, and anything they left on the managed local-SuperLink port.
A run watcher (``server.flower.run_watcher``) runs beside them and ends the SuperNodes'
ClientApps once no run is active, so ``flwr stop`` stops the training, not only the run.

By default the fleet is secure: the SuperLink serves TLS with a certificate of the fleet's
own CA and accepts only SuperNodes whose public key was registered
(``--enable-supernode-auth``); ``up`` creates the certificates and keys
(``server.flower.certs``) in ``<state>/certs`` unless given a directory, and registers each
SuperNode's key with ``flwr supernode register`` before that SuperNode starts.
``insecure=True`` (plain text, anyone may join) is for local development only.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import ssl
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from apt_core.federated.device_class import DEFAULT_DEVICE_CLASS
from server.flower.certs import DEFAULT_HOSTS, NodeKey, ensure_certs
from server.flower.fleet_state import FleetState, Proc
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
from server.flower.registration import register_keys, register_node
from server.flower.submission import (
    CONNECTION,
    RunOutcome,
    ServerSettingsLike,
    flwr,
    json_out,
    submit,
    submit_to_superlink,
    write_cli_config,
)
from server.ports import free_port

__all__ = [
    "CONNECTION",
    "DEFAULT_STATE_DIR",
    "LOCAL_SUPERLINK_PORT",
    "FleetError",
    "FleetState",
    "Proc",
    "RunOutcome",
    "ServerSettingsLike",
    "down",
    "register_keys",
    "register_node",
    "run_app",
    "run_log",
    "start_supernode",
    "status",
    "submit_to_superlink",
    "supernodes",
    "up",
]

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path(os.environ.get("APTFLEET_FLEET_DIR", "/tmp/aptfleet-fleet"))
#: Port of the SuperLink that ``flwr`` spawns for the ``:local:`` connection.
LOCAL_SUPERLINK_PORT = 39091


def _start(role: str, args: list[str], home: Path, port: int, node_config: str = "") -> Proc:
    pid, log_file = start_process(args, home, role)
    return Proc(role, pid, port, str(home), str(log_file), node_config)


def _wait_health(port: int, timeout: float, ca_file: Path | None) -> None:
    """Wait for ``/health`` of the SuperLink, over TLS verified by ``ca_file`` when given."""
    deadline = time.monotonic() + timeout
    scheme = "http" if ca_file is None else "https"
    url = f"{scheme}://127.0.0.1:{port}/health"
    context = None if ca_file is None else ssl.create_default_context(cafile=str(ca_file))
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(
                url,
                timeout=1,  # noqa: S310 (loopback)
                context=context,
            ) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise FleetError(f"The SuperLink did not answer {url} within {timeout:.0f} s.")


def up(
    nodes: int,
    state_dir: Path = DEFAULT_STATE_DIR,
    device_classes: Sequence[str] | None = None,
    node_config: Mapping[int, Mapping[str, Any]] | None = None,
    timeout: float = 60.0,
    *,
    insecure: bool = False,
    certs_dir: Path | None = None,
    hosts: Sequence[str] = DEFAULT_HOSTS,
) -> FleetState:
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
    insecure : bool (default: False)
        Plain text and no SuperNode authentication: local development only.
    certs_dir : Path | None (default: None -> ``<state_dir>/certs``)
        Certificates and node keys (``aptfleet fleet certs``); what is missing is created.
    hosts : Sequence[str] (default: 127.0.0.1, localhost, superlink)
        Names the SuperLink's certificate is valid for, when it is created.
    """
    if nodes < 1:
        raise FleetError(f"nodes={nodes} must be >= 1.")
    state_dir = state_dir.resolve()
    old = FleetState.load(state_dir)
    if old is not None and any(alive(p.pid) for p in old.procs):
        raise FleetError(f"A fleet is already up in {state_dir}; run 'fleet down' first.")
    state_dir.mkdir(parents=True, exist_ok=True)
    state = FleetState(str(state_dir), free_port(), insecure=insecure)
    if insecure:
        log.warning(
            "Fleet in %s is INSECURE: plain text, and any process that reaches the "
            "SuperLink can join as a device. Use it for local development only.",
            state_dir,
        )
    else:
        certs = ensure_certs(certs_dir or state_dir / "certs", nodes, hosts)
        state.certs_dir = str(certs.root)
    try:
        _start_superlink(state, timeout)
        write_cli_config(
            state.cli_home,
            state.address,
            insecure=insecure,
            ca_file=None if state.certs is None else state.certs.ca_cert,
        )
        classes = list(device_classes or [DEFAULT_DEVICE_CLASS])
        for i in range(nodes):
            extra = {
                "device-class": classes[i % len(classes)],
                **dict((node_config or {}).get(i, {})),
            }
            if state.certs is None:
                start_supernode(state, i, nodes, extra, insecure=True)
            else:
                key = state.certs.node(i)
                node_id = register_node(state, key.public)
                start_supernode(
                    state,
                    i,
                    nodes,
                    extra,
                    root_certificates=state.certs.ca_cert,
                    key=key,
                    node_id=node_id,
                )
        _check_started(state)
        _start_run_watcher(state)
    except BaseException:
        down(state_dir)
        raise
    log.info(
        "Fleet up: SuperLink on %s (%s), %s SuperNodes, state in %s",
        state.address,
        "INSECURE" if insecure else "TLS, SuperNode authentication",
        nodes,
        state_dir,
    )
    return state


def _start_run_watcher(state: FleetState) -> None:
    """Start the fleet's run watcher: it ends the ClientApps once no run is active."""
    args = [sys.executable, "-m", "server.flower.run_watcher", "--state-dir", state.state_dir]
    state.procs.append(_start("run-watcher", args, state.cli_home, 0))
    state.save()


def _start_superlink(state: FleetState, timeout: float) -> None:
    """Start the SuperLink on the state's port and wait until it is healthy."""
    port = state.superlink_port
    certs = state.certs
    security = (
        ["--insecure"] if certs is None else [*certs.server_args(), "--enable-supernode-auth"]
    )
    state.procs.append(
        _start(
            "superlink",
            [
                executable("flower-superlink"),
                *security,
                "--disable-runtime-dependency-installation",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            Path(state.state_dir) / "link",
            port,
        )
    )
    state.save()
    _wait_health(port, timeout, None if certs is None else certs.ca_cert)


def supernodes(state: FleetState) -> list[dict[str, Any]]:
    """The SuperNodes the SuperLink knows (``flwr supernode list --format json``).

    Each comes with its node id and status (``registered``, ``online``, ``offline``, ...).
    """
    res = flwr(state.cli_home, ["supernode", "list", CONNECTION, "--format", "json"], 60)
    try:
        return list(json_out(res.stdout).get("nodes") or [])
    except (FleetError, ValueError):
        return []


def start_supernode(
    state: FleetState,
    i: int,
    nodes: int,
    extra: Mapping[str, Any],
    *,
    insecure: bool = False,
    root_certificates: Path | None = None,
    key: NodeKey | None = None,
    node_id: int = 0,
) -> Proc:
    """Start SuperNode ``i`` of ``nodes`` with node config ``extra`` on top of its partition.

    With TLS, ``root_certificates`` is the CA it verifies the SuperLink with (None: the
    system's trust store) and ``key`` its key pair (None: no authentication); ``node_id`` is
    what its key was registered as, kept in the state file.
    """
    cfg = " ".join(
        [f"partition-id={i}", f"num-partitions={nodes}"]
        + [f"{k}={json.dumps(v)}" for k, v in extra.items()]
    )
    security = ["--insecure"] if insecure else []
    if root_certificates is not None:
        security += ["--root-certificates", str(root_certificates)]
    if key is not None:
        security += ["--auth-supernode-private-key", str(key.private)]
    nport = free_port()
    proc = _start(
        f"supernode-{i}",
        [
            executable("flower-supernode"),
            *security,
            "--superlink",
            state.address,
            "--host",
            "127.0.0.1",
            "--port",
            str(nport),
            "--node-config",
            cfg,
        ],
        Path(state.state_dir) / f"node{i}",
        nport,
        cfg,
    )
    proc.node_id = node_id
    state.procs.append(proc)
    state.save()
    return proc


def _check_started(state: FleetState) -> None:
    """Fail when a process died right after its start (bad flags, port taken, ...)."""
    time.sleep(1.0)
    dead = [p.role for p in state.procs if not alive(p.pid)]
    if dead:
        raise FleetError(
            f"Fleet processes exited right after start: {dead}; see the logs in {state.state_dir}."
        )


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
    return {
        "up": any(p["alive"] for p in procs),
        "superlink_port": state.superlink_port,
        "procs": procs,
    }


def run_app(
    run_config: Mapping[str, Any] | None = None,
    state_dir: Path = DEFAULT_STATE_DIR,
    app_dir: Path = REPO_ROOT,
    timeout: float = 600.0,
) -> RunOutcome:
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
