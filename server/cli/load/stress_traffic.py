"""The stress scenarios' clients, and the checks of what the coordinator stored.

Steady reads, a burst of run starts, concurrent policy writes.

Every client talks to 127.0.0.1 only, every loop is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx

from server.cli.load.traffic import MAX_IN_FLIGHT, REQUEST_TIMEOUT_S, Sample

#: The steady reads, in turn: two authenticated API reads and the liveness probe.
READ_PATHS = (
    ("GET /api/v1/runs", "/api/v1/runs"),
    ("GET /api/v1/devices", "/api/v1/devices"),
    ("GET /healthz", "/healthz"),
)
#: Run states that count as "not lost": still under way or ended normally.
ALIVE = {"queued", "pending", "running", "completed"}
UNFINISHED = {"queued", "pending", "running"}
WRITE_TIMEOUT_S = 30.0


def _client(base: str, token: str, connections: int, timeout: float) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(
        base_url=base, limits=limits, timeout=timeout, headers={"Authorization": f"Bearer {token}"}
    )


async def steady_reads(
    base: str, token: str, rate: float, duration: float, t0: float
) -> list[Sample]:
    """``rate`` reads/s, open loop, from loop time ``t0`` for ``duration`` seconds.

    Latency counts from each request's intended send time (no coordinated omission);
    ``Sample.due_s`` is seconds since ``t0``.
    """
    samples: list[Sample] = []
    loop = asyncio.get_running_loop()
    in_flight = 0

    async def one(client: httpx.AsyncClient, i: int, due: float) -> None:
        nonlocal in_flight
        name, path = READ_PATHS[i % len(READ_PATHS)]
        in_flight += 1
        try:
            response = await client.get(path)
            samples.append(Sample(name, due - t0, (loop.time() - due) * 1000, response.status_code))
        except httpx.HTTPError as exc:
            samples.append(
                Sample(name, due - t0, (loop.time() - due) * 1000, 0, type(exc).__name__)
            )
        finally:
            in_flight -= 1

    tasks: set[asyncio.Task[None]] = set()
    async with _client(base, token, MAX_IN_FLIGHT, REQUEST_TIMEOUT_S) as client:
        for i in range(int(rate * duration)):
            due = t0 + i / rate
            if (delay := due - loop.time()) > 0:
                await asyncio.sleep(delay)
            if in_flight >= MAX_IN_FLIGHT:
                samples.append(
                    Sample(
                        READ_PATHS[i % len(READ_PATHS)][0],
                        due - t0,
                        0.0,
                        0,
                        "not sent: too many in flight",
                    )
                )
                continue
            task = asyncio.create_task(one(client, i, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT_S + 5)
    return samples


async def run_burst(
    base: str, tokens: list[str], count: int, body: dict[str, Any]
) -> list[dict[str, Any]]:
    """``count`` simultaneous ``POST /api/v1/runs``, spread over the operator ``tokens``.

    Returns
    -------
    list[dict[str, Any]]
        Per request: status (0 when no answer), latency, the run id and status returned.
    """
    clients = [_client(base, t, count, WRITE_TIMEOUT_S) for t in tokens]
    start = asyncio.Event()

    async def one(i: int) -> dict[str, Any]:
        await start.wait()
        t = time.perf_counter()
        try:
            r = await clients[i % len(clients)].post("/api/v1/runs", json=body)
            data = r.json() if r.status_code == 201 else {}
            return {
                "status": r.status_code,
                "ms": (time.perf_counter() - t) * 1000,
                "id": data.get("id"),
                "run_status": data.get("status"),
                "queue_position": data.get("queue_position"),
            }
        except httpx.HTTPError as exc:
            return {
                "status": 0,
                "ms": (time.perf_counter() - t) * 1000,
                "error": type(exc).__name__,
            }

    try:
        tasks = [asyncio.create_task(one(i)) for i in range(count)]
        await asyncio.sleep(0.05)  # every request waits on the same event
        start.set()
        return list(await asyncio.gather(*tasks))
    finally:
        for client in clients:
            await client.aclose()


async def policy_writers(
    base: str, tokens: list[str], writers: int, writes: int, deadline: float
) -> list[dict[str, Any]]:
    """``writers`` concurrent admins doing ``PUT /api/v1/policy`` back to back.

    Each does up to ``writes`` of them, until loop time ``deadline``; they start together.

    The API has no expected-version field (``PolicyUpdate``): each PUT creates version
    current + 1, and two writers taking the same number is a 409. Each body changes
    ``check_every`` and carries a note naming writer and attempt.
    """
    loop = asyncio.get_running_loop()
    clients = [_client(base, t, 2, WRITE_TIMEOUT_S) for t in tokens]
    start = asyncio.Event()

    async def writer(w: int) -> list[dict[str, Any]]:
        client = clients[w % len(clients)]
        out = []
        await start.wait()
        for i in range(writes):
            if loop.time() >= deadline:
                break
            body = {"check_every": 1 + (w * writes + i) % 50, "note": f"stress w{w} #{i}"}
            t = time.perf_counter()
            try:
                r = await client.put("/api/v1/policy", json=body)
                out.append(
                    {
                        "status": r.status_code,
                        "ms": (time.perf_counter() - t) * 1000,
                        "version": r.json().get("version") if r.status_code == 200 else None,
                    }
                )
            except httpx.HTTPError as exc:
                out.append(
                    {
                        "status": 0,
                        "ms": (time.perf_counter() - t) * 1000,
                        "error": type(exc).__name__,
                    }
                )
        return out

    try:
        tasks = [asyncio.create_task(writer(w)) for w in range(writers)]
        await asyncio.sleep(0.05)
        start.set()
        return [r for rs in await asyncio.gather(*tasks) for r in rs]
    finally:
        for client in clients:
            await client.aclose()


def queue_check(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether the queued runs' positions are exactly 1..k, in admission order.

    ``runs`` is the ``data`` of one ``GET /api/v1/runs`` (newest first). The coordinator
    admits by (created_at, id); ``id_order`` also says whether that is the id order
    (concurrent inserts may take ids and timestamps in different orders).
    """
    queued = [r for r in runs if r["status"] == "queued"]
    positions = sorted(r.get("queue_position") or 0 for r in queued)
    stray = [
        r["id"] for r in runs if r["status"] != "queued" and r.get("queue_position") is not None
    ]
    by_position = [r["id"] for r in sorted(queued, key=lambda r: r.get("queue_position") or 0)]
    by_creation = [r["id"] for r in sorted(queued, key=lambda r: (r["created_at"], r["id"]))]
    return {
        "queued": len(queued),
        "statuses": dict(Counter(r["status"] for r in runs)),
        "consistent": positions == list(range(1, len(queued) + 1))
        and not stray
        and by_position == by_creation,
        "id_order": by_position == sorted(by_position),
    }


async def queue_snapshots(
    base: str, token: str, every: float, deadline: float
) -> list[dict[str, Any]]:
    """:func:`queue_check` of ``GET /api/v1/runs`` every ``every`` s until ``deadline``.

    ``deadline`` is a time of the running event loop.
    """
    loop = asyncio.get_running_loop()
    out: list[dict[str, Any]] = []
    async with _client(base, token, 1, REQUEST_TIMEOUT_S) as client:
        while loop.time() + every < deadline:
            await asyncio.sleep(every)
            try:
                r = await client.get("/api/v1/runs", params={"limit": 1000})
                out.append({**queue_check(r.json()["data"]), "status": r.status_code})
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                out.append({"status": 0, "error": type(exc).__name__, "consistent": False})
    return out


def runs_check(api: httpx.Client, burst: list[dict[str, Any]]) -> dict[str, Any]:
    """Every run the burst created is stored, in a normal state; queue positions hold."""
    stored = {r["id"]: r for r in api.get("/runs", params={"limit": 1000}).json()["data"]}
    created = [b["id"] for b in burst if b.get("id") is not None]
    lost = [i for i in created if i not in stored]
    bad = {
        i: stored[i]["status"] for i in created if i in stored and stored[i]["status"] not in ALIVE
    }
    return {
        "created": len(created),
        "distinct_ids": len(set(created)),
        "lost": lost,
        "abnormal": bad,
        "queue": queue_check(list(stored.values())),
        "statuses": dict(Counter(stored[i]["status"] for i in created if i in stored)),
    }


def policy_check(api: httpx.Client, writes: list[dict[str, Any]]) -> dict[str, Any]:
    """The stored history: versions 1..n without gaps or duplicates, one per 200."""
    rows = api.get("/policy/history", params={"limit": 1000}).json()["data"]
    versions = sorted(r["version"] for r in rows)
    ok = sum(1 for w in writes if w["status"] == 200)
    answered = sorted(w["version"] for w in writes if w["status"] == 200)
    return {
        "versions": len(versions),
        "latest": versions[-1] if versions else None,
        "contiguous": versions == list(range(1, len(versions) + 1)),
        "duplicates": len(versions) - len(set(versions)),
        "one_version_per_200": len(versions) == ok + 1,
        "answered_versions_distinct": len(answered) == len(set(answered)),
    }


def stop_unfinished(api: httpx.Client, burst: list[dict[str, Any]]) -> dict[str, int]:
    """``POST /runs/{id}/stop`` on every burst run not yet ended.

    Returns the counts of the answers (409 when a run ended in between).
    """
    stored = {r["id"]: r for r in api.get("/runs", params={"limit": 1000}).json()["data"]}
    answers: Counter[str] = Counter()
    for item in burst:
        run = stored.get(item.get("id"))
        if run is not None and run["status"] in UNFINISHED:
            answers[str(api.post(f"/runs/{run['id']}/stop").status_code)] += 1
    return dict(answers)
