"""Processes of a local Flower deployment: environment, start, liveness and stop.

Every process starts in its own session (pid == process group id), so stopping a process
group ends the process and whatever it spawned. Liveness and group membership are read
from Linux ``/proc``; zombies count as gone.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
_ENV = {
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}


class FleetError(RuntimeError):
    """The fleet could not be started, reached or stopped; the message says why."""


def port_open(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def flwr_env(flwr_home: Path) -> dict[str, str]:
    """Environment of a Flower process: its own FLWR_HOME, with the repo importable.

    Telemetry, update checks and runtime dependency installs are turned off.
    """
    env = {**os.environ, **_ENV, "FLWR_HOME": str(flwr_home)}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    return env


def executable(name: str) -> str:
    """Path of a Flower executable, preferring the one next to this Python.

    Raises
    ------
    FleetError
        If it is installed neither next to ``sys.executable`` nor on PATH.
    """
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise FleetError(
            f"Executable '{name}' was not found next to {sys.executable} or on "
            "PATH; install flwr into this environment."
        )
    return found


def start_process(args: list[str], home: Path, log_name: str) -> tuple[int, Path]:
    """Start ``args`` in a session of its own with FLWR_HOME ``home``; returns (pid, log file).

    Output is appended to ``home/<log_name>.log``.
    """
    home.mkdir(parents=True, exist_ok=True)
    log_file = home / f"{log_name}.log"
    with log_file.open("ab") as out:
        p = subprocess.Popen(
            args,
            env=flwr_env(home),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(REPO_ROOT),
            start_new_session=True,
        )
    return p.pid, log_file


def alive(pid: int) -> bool:
    """True while process ``pid`` runs (a zombie child of ours is reaped and counts as gone)."""
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


def stop_group(pid: int, grace: float) -> None:
    """SIGTERM the process group ``pid`` leads, SIGKILL what is left after ``grace`` s."""
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
    alive(pid)  # reap it if it is our child


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
    """``flower-superlink`` processes whose FLWR_HOME is ``flwr_home``.

    With ``exact=False``, those whose FLWR_HOME contains it.
    """
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        homes = [
            e[len(b"FLWR_HOME=") :].decode(errors="replace")
            for e in env
            if e.startswith(b"FLWR_HOME=")
        ]
        if any(b"flower-superlink" in c for c in cmd[:2]) and any(
            h == flwr_home if exact else flwr_home in h for h in homes
        ):
            pids.append(int(entry.name))
    return pids


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return bool(process_group_members({pgid}))  # only zombies left counts as gone


def is_group_leader(pid: int) -> bool:
    """True when ``pid`` leads its own process group (it was started in its own session)."""
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False
