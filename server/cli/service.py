"""A real coordinator process (``aptfleet serve``) on loopback, for the load tool and tests.

It runs on a data directory and database of its own, in its own session (so stopping its
process group also stops the run jobs it started), and logs to
``<data_dir>/coordinator.log``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from server.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
_JOB_MODULE = b"server.coordinator.job"


class ServiceError(RuntimeError):
    """The coordinator process exited while it was expected to serve."""


class Coordinator:
    """Starts, kills and restarts ``aptfleet serve`` on a database of its own.

    Parameters
    ----------
    data_dir : Path
        The coordinator's APTFLEET_DATA_DIR; holds its log and, by default, its SQLite file.
    database_url : str | None (default: None -> sqlite:///<data_dir>/aptfleet.db)
        The coordinator's database.
    """

    def __init__(self, data_dir: Path, database_url: str | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "APTFLEET_DATA_DIR": str(data_dir),
            "APTFLEET_DATABASE_URL": database_url or f"sqlite:///{data_dir / 'aptfleet.db'}",
            "APTFLEET_SUPERLINK": "",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_TELEMETRY_ENABLED": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        """The service log."""
        return self.data_dir / "coordinator.log"

    @property
    def pid(self) -> int:
        """PID of the running service process (the leader of its process group)."""
        if self.proc is None:
            raise ServiceError("The coordinator has not been started; call start() first.")
        return self.proc.pid

    def cli(self, *args: str) -> str:
        """Run an ``aptfleet`` sub-command against this coordinator's database."""
        return subprocess.run(
            [sys.executable, "-m", "server.cli.main", *args],
            env=self.env,
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    def token(self, role: str, name: str | None = None) -> str:
        """A new bearer token of ``role`` (the CLI prints it once; it is never logged here)."""
        return self.cli("token", "create", "--role", role, "--name", name or f"test-{role}")

    def start(self, timeout: float = 60.0) -> None:
        """Start the service and wait until /readyz answers 200."""
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "server.cli.main", "serve", "--port", str(self.port)],
                env=self.env,
                cwd=REPO_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self._ready, timeout, "the coordinator to become ready")

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise ServiceError(
                f"The coordinator exited with code {self.proc.returncode}; "
                f"the end of {self.log_path}:\n{self.log()[-3000:]}"
            )
        try:
            return httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL the service process only (its run jobs live on, as after a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM the service's process group, then SIGKILL it after ``grace`` seconds.

        On SIGTERM the service stops its run jobs itself.
        """
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def log(self) -> str:
        """The service log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, token: str, timeout: float = 30.0) -> httpx.Client:
        """An API client (``/api/v1``) with a bearer token."""
        return httpx.Client(
            base_url=f"{self.base}/api/v1",
            timeout=timeout,
            headers={"Authorization": f"Bearer {token}"},
        )


def wait_for(cond: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    """Poll ``cond`` until it returns something truthy and return that.

    Raises
    ------
    TimeoutError
        If ``cond`` stayed falsy for ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"Timed out after {timeout:.0f} s waiting for {what}.")


def run_job_pids(data_dir: Path) -> list[int]:
    """PIDs of ``server.coordinator.job`` processes working for the coordinator of ``data_dir``.

    Read from Linux /proc.
    """
    marker = f"APTFLEET_DATA_DIR={data_dir}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if _JOB_MODULE in cmdline and marker in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def kill_run_jobs(data_dir: Path) -> None:
    """End any ``server.coordinator.job`` process group left from a killed coordinator.

    Only jobs of the coordinator of ``data_dir`` are ended.
    """
    for pid in run_job_pids(data_dir):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
