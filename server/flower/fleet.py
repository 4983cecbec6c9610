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
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from server.ports import free_port

log = logging.getLogger(__name__)


class ServerSettingsLike(Protocol):
    """What :func:`submit_to_superlink` needs of ``server_app.ServerSettings``."""

    def to_run_config(self) -> dict[str, Any]:
        """run_config entries of the settings."""
        ...

CONNECTION = "aptfleet"
DEFAULT_STATE_DIR = Path(os.environ.get("APTFLEET_FLEET_DIR", "/tmp/aptfleet-fleet"))
REPO_ROOT = Path(__file__).resolve().parents[2]
#: Port of the SuperLink that ``flwr`` spawns for the ``:local:`` connection.
LOCAL_SUPERLINK_PORT = 39091
_ENV = {"FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1", "RAY_USAGE_STATS_ENABLED": "0"}


class FleetError(RuntimeError):
    """The fleet could not be started, reached or stopped; the message says why."""


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


@dataclass(frozen=True)
class RunOutcome:
    """A submitted run: its id, final status (``finished:completed`` on success), details."""

    run_id: int
    status: str
    details: str = ""

    @property
    def ok(self) -> bool:
        """True when the run finished and completed."""
        return self.status == "finished:completed"


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _env(flwr_home: Path) -> dict[str, str]:
    env = {**os.environ, **_ENV, "FLWR_HOME": str(flwr_home)}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return env


def _exe(name: str) -> str:
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise FleetError(f"Executable '{name}' was not found next to {sys.executable} or on "
                         "PATH; install flwr into this environment.")
    return found


def _start(role: str, args: list[str], home: Path, port: int, node_config: str = "") -> Proc:
    home.mkdir(parents=True, exist_ok=True)
    log_file = home / f"{role}.log"
    with log_file.open("ab") as out:
        p = subprocess.Popen(args, env=_env(home), stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, cwd=str(REPO_ROOT),
                             start_new_session=True)
    return Proc(role, p.pid, port, str(home), str(log_file), node_config)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        os.waitpid(pid, os.WNOHANG)
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except (ChildProcessError, FileNotFoundError):
        return _exists(pid)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


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


def _write_cli_config(cli_home: Path, address: str, insecure: bool = True) -> None:
    cli_home.mkdir(parents=True, exist_ok=True)
    (cli_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "{address}"\ninsecure = {str(insecure).lower()}\n')


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
    if old is not None and any(_alive(p.pid) for p in old.procs):
        raise FleetError(f"A fleet is already up in {state_dir}; run 'fleet down' first.")
    state_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    state = FleetState(str(state_dir), port)
    try:
        state.procs.append(_start("superlink", [
            _exe("flower-superlink"), "--insecure", "--disable-runtime-dependency-installation",
            "--host", "127.0.0.1", "--port", str(port)], state_dir / "link", port))
        state.save()
        _wait_health(port, timeout)
        classes = list(device_classes or ["standard"])
        for i in range(nodes):
            extra = {"device-class": classes[i % len(classes)],
                     **dict((node_config or {}).get(i, {}))}
            cfg = " ".join([f"partition-id={i}", f"num-partitions={nodes}"]
                           + [f"{k}={json.dumps(v)}" for k, v in extra.items()])
            nport = free_port()
            state.procs.append(_start(f"supernode-{i}", [
                _exe("flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}",
                "--host", "127.0.0.1", "--port", str(nport), "--node-config", cfg],
                state_dir / f"node{i}", nport, cfg))
            state.save()
        _write_cli_config(state.cli_home, f"127.0.0.1:{port}")
        time.sleep(1.0)
        dead = [p.role for p in state.procs if not _alive(p.pid)]
        if dead:
            raise FleetError(f"Fleet processes exited right after start: {dead}; see the logs "
                             f"in {state_dir}.")
    except BaseException:
        down(state_dir)
        raise
    log.info("Fleet up: SuperLink on 127.0.0.1:%s, %s SuperNodes, state in %s", port, nodes,
             state_dir)
    return state


def _stop(pid: int, grace: float) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _group_alive(pid):
        time.sleep(0.2)
    if _group_alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _alive(pid)  # reap it if it is our child


def process_group_members(pgids: set[int]) -> set[int]:
    """Live (non-zombie) processes whose process group is one of ``pgids`` (Linux /proc)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[2]) in pgids and stat[0] != "Z":
                out.add(int(entry.name))
    return out


def superlink_pids(flwr_home: str, *, exact: bool = True) -> list[int]:
    """``flower-superlink`` processes whose FLWR_HOME is ``flwr_home`` (or, with
    ``exact=False``, contains it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        homes = [e[len(b"FLWR_HOME="):].decode(errors="replace") for e in env
                 if e.startswith(b"FLWR_HOME=")]
        if any(b"flower-superlink" in c for c in cmd[:2]) and any(
                h == flwr_home if exact else flwr_home in h for h in homes):
            pids.append(int(entry.name))
    return pids


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return bool(process_group_members({pgid}))  # only zombies left counts as gone


def down(state_dir: Path = DEFAULT_STATE_DIR, grace: float = 15.0) -> list[int]:
    """Stop every process the fleet started (SuperNodes first); returns their PIDs."""
    state_dir = state_dir.resolve()
    state = FleetState.load(state_dir)
    if state is None:
        return []
    pids = [p.pid for p in state.procs]
    for p in sorted(state.procs, key=lambda p: p.role == "superlink"):
        _stop(p.pid, grace)
    _stop_local_superlink(state)
    (state_dir / "fleet.json").unlink(missing_ok=True)
    log.info("Fleet down: stopped %s processes.", len(pids))
    return pids


def _stop_local_superlink(state: FleetState) -> None:
    """Kill a managed local SuperLink (:39091) if one runs with our CLI FLWR_HOME."""
    for pid in superlink_pids(str(state.cli_home)):
        _stop(pid, 10.0) if _is_group_leader(pid) else os.kill(pid, signal.SIGTERM)


def _is_group_leader(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def status(state_dir: Path = DEFAULT_STATE_DIR) -> dict[str, Any]:
    """Each started process with whether it is still alive."""
    state = FleetState.load(state_dir.resolve())
    if state is None:
        return {"up": False, "procs": []}
    procs = [{**asdict(p), "alive": _alive(p.pid)} for p in state.procs]
    return {"up": any(p["alive"] for p in procs), "superlink_port": state.superlink_port,
            "procs": procs}


def _flwr(cli_home: Path, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([_exe("flwr"), *args], env=_env(cli_home), cwd=str(REPO_ROOT),
                          capture_output=True, text=True, timeout=timeout, check=False)


def _json_out(text: str) -> dict[str, Any]:
    start = text.find("{")
    if start < 0:
        raise FleetError(f"flwr printed no JSON: {text.strip()[:500]!r}")
    return json.loads(text[start:])


def run_status(cli_home: Path, run_id: int) -> tuple[str, str]:
    """(status, details) of a run from ``flwr list --run-id ID --format json``."""
    res = _flwr(cli_home, ["list", CONNECTION, "--run-id", str(run_id), "--format", "json"], 60)
    runs = _json_out(res.stdout).get("runs") or []
    if not runs:
        raise FleetError(f"flwr list knows no run {run_id}: {res.stdout.strip()[:500]}")
    return str(runs[0].get("status", "")), str(runs[0].get("status-details", ""))


def run_app(run_config: Mapping[str, Any] | None = None, state_dir: Path = DEFAULT_STATE_DIR,
            app_dir: Path = REPO_ROOT, timeout: float = 600.0) -> RunOutcome:
    """Submit the app to the fleet's SuperLink and wait until the run finishes.

    ``run_config`` overrides go through ``flwr run -c``; the SuperLink rejects keys that are
    not in ``[tool.flwr.app.config]`` of the app's pyproject.toml.
    """
    state = FleetState.load(state_dir.resolve())
    if state is None:
        raise FleetError(f"No fleet is up in {state_dir}; run 'fleet up' first.")
    return _submit(state.cli_home, run_config or {}, app_dir, timeout)


def submit_to_superlink(address: str, settings: ServerSettingsLike, *, db_url: str = "",
                        coordinator_run_id: int = 0, app_dir: Path = REPO_ROOT,
                        timeout: float = 24 * 3600.0, insecure: bool = True) -> RunOutcome:
    """Run the app on an existing SuperLink (``host:port``) and wait for it to finish.

    The run_config carries ``settings.to_run_config()`` plus ``db-url`` and
    ``coordinator-run-id`` (only when set), so every key must be declared in the app's
    ``[tool.flwr.app.config]``.

    Raises
    ------
    FleetError
        If the run cannot be submitted, or it finishes in any status but completed.
    """
    import tempfile

    overrides = dict(settings.to_run_config())
    if db_url:
        overrides["db-url"] = db_url
    if coordinator_run_id:
        overrides["coordinator-run-id"] = int(coordinator_run_id)
    with tempfile.TemporaryDirectory(prefix="aptfleet-cli-") as home:
        _write_cli_config(Path(home), address, insecure)
        outcome = _submit(Path(home), overrides, app_dir, timeout)
    if not outcome.ok:
        raise FleetError(f"Run {outcome.run_id} on {address} ended {outcome.status}: "
                         f"{outcome.details}")
    return outcome


def _submit(cli_home: Path, run_config: Mapping[str, Any], app_dir: Path,
            timeout: float) -> RunOutcome:
    args = ["run", str(app_dir), CONNECTION, "--format", "json"]
    for k, v in run_config.items():
        args += ["-c", f"{k}={json.dumps(v)}"]
    res = _flwr(cli_home, args, 120)
    try:
        out = _json_out(res.stdout)
    except (FleetError, json.JSONDecodeError):
        raise FleetError(f"flwr run failed (exit {res.returncode}): "
                         f"{(res.stdout + res.stderr).strip()[-1500:]}") from None
    if not out.get("success") or out.get("run-id") is None:
        raise FleetError(f"flwr run did not start a run: {out}")
    run_id = int(out["run-id"])
    deadline = time.monotonic() + timeout
    st, details = run_status(cli_home, run_id)
    while not st.startswith("finished") and time.monotonic() < deadline:
        time.sleep(3.0)
        st, details = run_status(cli_home, run_id)
    if not st.startswith("finished"):
        _flwr(cli_home, ["stop", str(run_id), CONNECTION], 60)
        raise FleetError(f"Run {run_id} did not finish within {timeout:.0f} s (status {st}); "
                         "it was stopped.")
    return RunOutcome(run_id, st, details)


def run_log(run_id: int, state_dir: Path = DEFAULT_STATE_DIR) -> str:
    """The ServerApp log of a run (``flwr log ID --show``)."""
    state = FleetState.load(state_dir.resolve())
    if state is None:
        raise FleetError(f"No fleet is up in {state_dir}.")
    res = _flwr(state.cli_home, ["log", str(run_id), CONNECTION, "--show"], 60)
    return res.stdout + res.stderr
