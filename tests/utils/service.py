"""A real coordinator process (``aptfleet serve``) for end-to-end tests."""

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


class Coordinator:
    """Starts, kills and restarts ``aptfleet serve`` on a database of its own."""

    def __init__(self, data_dir: Path, database_url: str | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ)
        self.env.update({
            "APTFLEET_DATA_DIR": str(data_dir),
            "APTFLEET_DATABASE_URL": database_url or f"sqlite:///{data_dir / 'aptfleet.db'}",
            "APTFLEET_SUPERLINK": "", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"})
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> str:
        """Run an ``aptfleet`` sub-command against this coordinator's database."""
        return subprocess.run([sys.executable, "-m", "server.cli.main", *args], env=self.env,
                              check=True, capture_output=True, text=True).stdout.strip()

    def token(self, role: str) -> str:
        """A new bearer token of ``role``."""
        return self.cli("token", "create", "--role", role, "--name", f"test-{role}")

    def start(self, timeout: float = 60.0) -> None:
        """Start the service and wait for /readyz."""
        log = (self.data_dir / "coordinator.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli.main", "serve", "--port", str(self.port)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_for(lambda: self._ready(), timeout, "the coordinator to become ready")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"coordinator exited: {self.log()[-3000:]}")
        try:
            return httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL the service process only (its run jobs live on, as after a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        """Terminate the service and everything in its process group."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)

    def log(self) -> str:
        """The service log so far."""
        path = self.data_dir / "coordinator.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def client(self, token: str) -> httpx.Client:
        """An API client with a bearer token."""
        return httpx.Client(base_url=f"{self.base}/api/v1", timeout=30,
                            headers={"Authorization": f"Bearer {token}"})


def wait_for(cond: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    """Poll ``cond`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def run_job_pids(data_dir: Path) -> list[int]:
    """PIDs of ``server.coordinator.job`` processes working for the coordinator of ``data_dir``."""
    out = subprocess.run(["pgrep", "-f", "server.coordinator.job"], capture_output=True,
                         text=True).stdout
    pids = []
    for pid in out.split():
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if f"APTFLEET_DATA_DIR={data_dir}".encode() in env:
            pids.append(int(pid))
    return pids


def kill_run_jobs(data_dir: Path) -> None:
    """End any ``server.coordinator.job`` process group left from a killed coordinator of
    ``data_dir``."""
    for pid in run_job_pids(data_dir):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
