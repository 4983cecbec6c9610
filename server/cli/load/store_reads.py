"""Reads against a coordinator serving the synthetic store: latency per read, memory.

Every API read a client or the dashboard makes of a big run is timed end to end over HTTP
(``httpx``, one connection, one request at a time), then four readers loop over the
heaviest reads at once while the coordinator's resident memory is sampled from /proc.
"""

from __future__ import annotations

import re
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from server.cli.load.store_data import cpu_seconds
from server.coordinator.core.pagination import encode_cursor

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
#: Reads per endpoint; p99 of 50 samples is the worst but one.
REPEATS = 50
READERS = 4
RSS_SECONDS = 20.0
RSS_EVERY_S = 0.05


@dataclass(frozen=True)
class Read:
    """One read: a label for the report, the path and its query."""

    label: str
    path: str
    params: dict[str, Any]
    dashboard: bool = False


def api_reads(run_id: int, device_id: int, rounds: int) -> list[Read]:
    """Every list and detail read of the API on the big run, first pages and deep pages."""
    late = max(1, rounds - 10)
    run = f"/api/v1/runs/{run_id}"
    return [
        Read("GET /runs", "/api/v1/runs", {}),
        Read("GET /runs/{id}", run, {}),
        Read("GET /runs/{id}/summary", f"{run}/summary", {}),
        Read("GET /runs/{id}/rounds?limit=1000 (every round)", f"{run}/rounds", {"limit": 1000}),
        Read("GET /runs/{id}/clients (first page, 100)", f"{run}/clients", {}),
        Read("GET /runs/{id}/clients?limit=1000", f"{run}/clients", {"limit": 1000}),
        Read(
            "GET /runs/{id}/clients?cursor= (page near the last round)",
            f"{run}/clients",
            {"cursor": encode_cursor([late, 0])},
        ),
        Read("GET /runs/{id}/clients?device=", f"{run}/clients", {"device": device_id}),
        Read("GET /runs/{id}/precision (first page, 1000)", f"{run}/precision", {}),
        Read(
            "GET /runs/{id}/precision?cursor= (page near the last round)",
            f"{run}/precision",
            {"cursor": encode_cursor([late, 0, ""])},
        ),
        Read(
            "GET /runs/{id}/precision?device= (one device, every round)",
            f"{run}/precision",
            {"device": device_id},
        ),
        Read(
            "GET /runs/{id}/precision?layer=&from_round=",
            f"{run}/precision",
            {"layer": "fc1", "from_round": late},
        ),
        Read(
            "GET /runs/{id}/precision/summary (every round and layer)",
            f"{run}/precision/summary",
            {"limit": 1000},
        ),
        Read("GET /devices", "/api/v1/devices", {}),
        Read("GET /devices?limit=1000", "/api/v1/devices", {"limit": 1000}),
        Read("GET /devices/{id}", f"/api/v1/devices/{device_id}", {}),
        Read("GET /policy/history", "/api/v1/policy/history", {}),
        Read("GET /tokens", "/api/v1/tokens", {}),
    ]


def dashboard_read(run_id: int) -> Read:
    """The run's dashboard page, as a signed-in browser loads it."""
    return Read("dashboard /runs/{id}", f"/runs/{run_id}", {}, dashboard=True)


def signed_in_client(base: str, token: str) -> httpx.Client:
    """A client with the API bearer token and a dashboard session cookie."""
    client = httpx.Client(base_url=base, timeout=60.0, headers={"Authorization": f"Bearer {token}"})
    form = client.get("/login")
    match = _CSRF.search(form.text)
    if match is None:
        raise RuntimeError(f"GET /login answered {form.status_code} without a sign-in form.")
    reply = client.post(
        "/login",
        data={"token": token, "next": "/", "csrf_token": match[1]},
        follow_redirects=False,
    )
    if reply.status_code != 303:
        raise RuntimeError(f"Dashboard sign-in answered {reply.status_code}, not 303.")
    return client


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def time_read(
    client: httpx.Client, read: Read, repeats: int = REPEATS, server_pid: int | None = None
) -> dict[str, Any]:
    """Latency of ``repeats`` sequential requests of ``read`` (after one warm-up).

    With ``server_pid``, also the coordinator's CPU time per request: unlike the latency it
    hardly moves when other jobs share the machine (the database server's time is not in
    it).
    """
    response = client.get(read.path, params=read.params)
    if response.status_code != 200:
        raise RuntimeError(f"{read.label}: {response.status_code} {response.text[:300]}")
    samples = []
    cpu_start = cpu_seconds(server_pid) if server_pid else 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        response = client.get(read.path, params=read.params)
        samples.append(1000 * (time.perf_counter() - start))
        response.raise_for_status()
    cpu_ms = 1000 * (cpu_seconds(server_pid) - cpu_start) / repeats if server_pid else None
    body = response.json() if not read.dashboard else None
    return {
        "label": read.label,
        "path": read.path,
        "params": read.params,
        "dashboard": read.dashboard,
        "bytes": len(response.content),
        "rows": len(body["data"]) if isinstance(body, dict) and "data" in body else None,
        "p50_ms": statistics.median(samples),
        "p99_ms": _percentile(samples, 0.99),
        "max_ms": max(samples),
        "server_cpu_ms": cpu_ms,
    }


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line.")


def _reader(
    make_client: Callable[[], httpx.Client],
    reads: list[Read],
    stop: threading.Event,
    counts: list[int],
) -> None:
    client = make_client()
    try:
        while not stop.is_set():
            for read in reads:
                client.get(read.path, params=read.params).raise_for_status()
                counts.append(1)
    finally:
        client.close()


def rss_under_readers(
    pid: int,
    make_client: Callable[[], httpx.Client],
    reads: list[Read],
    readers: int = READERS,
    seconds: float = RSS_SECONDS,
) -> dict[str, Any]:
    """Peak resident memory of the coordinator while ``readers`` clients loop over ``reads``."""
    before = rss_bytes(pid)
    stop, counts = threading.Event(), []  # type: ignore[var-annotated]
    threads = [
        threading.Thread(target=_reader, args=(make_client, reads, stop, counts), daemon=True)
        for _ in range(readers)
    ]
    for thread in threads:
        thread.start()
    peak, deadline = before, time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak = max(peak, rss_bytes(pid))
        time.sleep(RSS_EVERY_S)
    stop.set()
    for thread in threads:
        thread.join(120)
    return {
        "readers": readers,
        "seconds": seconds,
        "requests": len(counts),
        "reads": [read.label for read in reads],
        "rss_before_bytes": before,
        "rss_peak_bytes": peak,
        "rss_after_bytes": rss_bytes(pid),
    }
