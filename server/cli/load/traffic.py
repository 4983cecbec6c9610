"""The load itself: an open-loop stream of reads at a fixed rate, and a burst of reads.

Open loop: request i is sent at ``t0 + i / rate`` whether or not earlier ones finished,
and its latency is counted from that intended time, so a stalled server cannot hide its
stalls by slowing the sender (coordinated omission).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

#: Requests still in flight beyond this count are not sent and count as errors.
MAX_IN_FLIGHT = 500
REQUEST_TIMEOUT_S = 10.0
#: The burst: more simultaneous reads than AnyIO's 40 threads + 15 pooled connections.
BURST_REQUESTS = 80
BURST_TIMEOUT_S = 5.0
BURST_RECOVERY_S = 60.0


@dataclass
class Sample:
    """One request of the load: when it was due, how long it took, what came back."""

    endpoint: str
    due_s: float
    latency_ms: float
    status: int
    error: str = ""


def _read_paths(run_id: int) -> list[tuple[str, str]]:
    """(endpoint name, path) of the reads the load cycles through, about run ``run_id``."""
    return [
        ("GET /runs", "/runs"),
        ("GET /runs/{id}", f"/runs/{run_id}"),
        ("GET /runs/{id}/rounds", f"/runs/{run_id}/rounds"),
        ("GET /runs/{id}/precision", f"/runs/{run_id}/precision"),
        ("GET /devices", "/devices"),
    ]


async def send_load(
    base: str,
    token: str,
    run_id: int,
    rate: float,
    min_duration: float,
    max_duration: float,
    run_done: Callable[[], bool],
) -> tuple[list[Sample], float]:
    """Send ``rate`` requests/s open-loop; return the samples and the load's wall time.

    Sending goes on until ``min_duration`` has passed and ``run_done()`` (checked once a second, in
    a thread), or until ``max_duration`` has passed.
    """
    paths = _read_paths(run_id)
    samples: list[Sample] = []
    in_flight = 0
    limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=100)
    async with httpx.AsyncClient(
        base_url=f"{base}/api/v1",
        limits=limits,
        timeout=REQUEST_TIMEOUT_S,
        headers={"Authorization": f"Bearer {token}"},
    ) as client:
        loop = asyncio.get_running_loop()
        t0 = loop.time()

        async def one(i: int, due: float) -> None:
            nonlocal in_flight
            name, path = paths[i % len(paths)]
            in_flight += 1
            try:
                response = await client.get(path)
                samples.append(
                    Sample(name, due - t0, (loop.time() - due) * 1000, response.status_code)
                )
            except httpx.HTTPError as exc:
                samples.append(
                    Sample(name, due - t0, (loop.time() - due) * 1000, 0, type(exc).__name__)
                )
            finally:
                in_flight -= 1

        tasks: set[asyncio.Task[None]] = set()
        checked_at, finished = t0, False
        for i in range(int(rate * max_duration)):
            due = t0 + i / rate
            elapsed = due - t0
            if elapsed >= min_duration:
                if loop.time() - checked_at >= 1.0:
                    checked_at = loop.time()
                    finished = await asyncio.to_thread(run_done)
                if finished:
                    break
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if in_flight >= MAX_IN_FLIGHT:
                samples.append(
                    Sample(
                        paths[i % len(paths)][0], elapsed, 0.0, 0, "not sent: too many in flight"
                    )
                )
                continue
            task = asyncio.create_task(one(i, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        sent_for = loop.time() - t0
        if tasks:
            await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT_S + 5)
    return samples, sent_for


async def burst(base: str, token: str, requests: int, timeout: float) -> dict[str, Any]:
    """``requests`` simultaneous GET /runs; counts what was answered within ``timeout``."""
    limits = httpx.Limits(max_connections=requests)
    async with httpx.AsyncClient(
        base_url=f"{base}/api/v1",
        limits=limits,
        timeout=timeout,
        headers={"Authorization": f"Bearer {token}"},
    ) as client:

        async def one() -> str:
            try:
                return str((await client.get("/runs")).status_code)
            except httpx.HTTPError as exc:
                return type(exc).__name__

        start = time.perf_counter()
        outcomes = await asyncio.gather(*(one() for _ in range(requests)))
        seconds = time.perf_counter() - start
    return {
        "requests": requests,
        "timeout_s": timeout,
        "seconds": seconds,
        "answered_2xx": sum(o.startswith("2") for o in outcomes),
        "outcomes": {o: outcomes.count(o) for o in sorted(set(outcomes))},
    }


def recovery_s(base: str, limit: float) -> float | None:
    """Seconds until /healthz answers within 0.2 s again; None if not within ``limit``."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        t = time.perf_counter()
        try:
            if (
                httpx.get(f"{base}/healthz", timeout=2).status_code == 200
                and time.perf_counter() - t < 0.2
            ):
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    return None
