"""Probes of the coordinator and its host: CPU time, pool timeouts, health, code version."""

from __future__ import annotations

import logging
import os
import resource
import subprocess
import time
from pathlib import Path

import httpx

from server.cli.service import REPO_ROOT, Coordinator, run_job_pids, wait_for

log = logging.getLogger("load")


def settle(service: Coordinator, patience: float = 90.0) -> bool:
    """Wait until the last run's job process exited and the service answers /healthz quickly.

    Ray tears down for a while after the run is marked completed.

    Returns True when the service did not recover within ``patience`` seconds and was
    restarted (same database and port), which the results report.
    """
    wait_for(lambda: not run_job_pids(service.data_dir), 300, "the run job to exit", every=1.0)
    streak = 0

    def quick() -> bool:
        nonlocal streak
        t = time.perf_counter()
        try:
            ok = httpx.get(f"{service.base}/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            ok = False
        streak = streak + 1 if ok and time.perf_counter() - t < 0.2 else 0
        return streak >= 3

    try:
        wait_for(quick, patience, "the service to answer quickly", every=1.0)
        return False
    except TimeoutError:
        log.warning(
            "the service still does not answer /healthz within 0.2 s after %.0f s; restarting it",
            patience,
        )
        service.stop(grace=20)
        service.start(timeout=120)
        return True


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) used so far by process ``pid`` (None: this process)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pool_timeouts(data_dir: Path) -> int:
    """SQLAlchemy pool timeouts in the service log so far."""
    path = data_dir / "coordinator.log"
    return path.read_text(errors="replace").count("QueuePool limit") if path.exists() else 0


def cpu_use(
    before: tuple[float, float], pid: int, seconds: float, requests: int
) -> dict[str, float]:
    """CPU used by the service and by this generator since ``before`` (their CPU-s)."""
    service_s = cpu_seconds(pid) - before[0]
    generator_s = cpu_seconds() - before[1]
    return {
        "seconds": seconds,
        "service_cpu_s": service_s,
        "generator_cpu_s": generator_s,
        "service_cores": service_s / seconds if seconds else float("nan"),
        "generator_cores": generator_s / seconds if seconds else float("nan"),
        "service_ms_per_request": 1000 * service_s / requests if requests else float("nan"),
    }


def code_version() -> str:
    """Short commit of the measured code, with ``-dirty`` when its sources have edits."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "server", "client", "apt_core")
    return f"{commit}-dirty" if dirty else commit
