"""The real run launcher: one ``python -m server.coordinator.job`` process group per run."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from server.coordinator.core.config import Settings

log = logging.getLogger(__name__)


class ProcessLauncher:
    """Starts each run as its own process group and stops it by signalling the group.

    A job outlives a coordinator that is killed; the restarted coordinator marks its run
    interrupted, and the job's recorder then refuses to store another round and exits.

    Parameters
    ----------
    settings : Settings
        Passed to the job through the environment (database URL, SuperLink, data dir).
    log_dir : Path | None (default: None -> ``<DATA_DIR>/runs``)
        Where each run's job log is written (``run-<id>.log``).
    """

    def __init__(self, settings: Settings, log_dir: Path | None = None) -> None:
        self.settings = settings
        self.log_dir = log_dir or Path(settings.DATA_DIR) / "runs"
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["APTFLEET_DATABASE_URL"] = self.settings.DATABASE_URL
        env["APTFLEET_DATA_DIR"] = str(self.settings.DATA_DIR)
        env["APTFLEET_SUPERLINK"] = self.settings.SUPERLINK
        env.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
        env.setdefault("FLWR_TELEMETRY_ENABLED", "0")
        env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        return env

    def start(self, run_id: int) -> None:
        """Spawn the run's job process and return at once."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        logfile = (self.log_dir / f"run-{run_id}.log").open("ab")
        proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [sys.executable, "-m", "server.coordinator.job", str(run_id)], stdout=logfile,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self._env(),
            start_new_session=True)
        logfile.close()
        with self._lock:
            self._procs[run_id] = proc
        log.info("run %s: job started (pid %s)", run_id, proc.pid)

    def stop(self, run_id: int, timeout: float = 15.0) -> None:
        """Terminate the run's process group (SIGTERM, then SIGKILL)."""
        with self._lock:
            proc = self._procs.pop(run_id, None)
        if proc is None or proc.poll() is not None:
            return
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout)
        log.info("run %s: job stopped", run_id)

    def shutdown(self) -> None:
        """Stop every job this launcher started (the coordinator is exiting)."""
        for run_id in list(self._procs):
            self.stop(run_id)

    def running(self) -> list[int]:
        """Ids of runs whose job process is still alive."""
        with self._lock:
            return [r for r, p in self._procs.items() if p.poll() is None]


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
