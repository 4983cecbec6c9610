"""Load benchmark of the coordinator: read latency at a fixed request rate during training.

Starts a real coordinator (``aptfleet serve``) on a temporary SQLite database, creates an
operator token, and trains simulated runs (POST /runs, Flower simulation engine):

1. a baseline run without load;
2. the same run while an open-loop generator sends ``--rate`` requests/s (default 100)
   for at least ``--duration`` seconds to the read endpoints GET /runs, /runs/{id},
   /runs/{id}/rounds, /runs/{id}/precision and /devices;
3. a second baseline run (so warm caches favour neither side).

Open loop: request i is sent at ``t0 + i / rate`` whether or not earlier ones finished,
and its latency is counted from that intended time, so a stalled server cannot hide its
stalls by slowing the sender (coordinated omission). Round wall times come from the
rounds' ``created_at`` (GET /runs/{id}/rounds). Only 127.0.0.1 is contacted; requests,
duration and every wait are bounded, and the script stops by itself.

Writes ``load.json``, ``load.md`` and ``load.png`` to ``--out`` (default docs/results).

    python -m server.cli.load --rate 100 --duration 60 --out docs/results
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from server.ports import free_port

log = logging.getLogger("load")

REPO = Path(__file__).resolve().parents[2]
RUN_BODY = {"task": "digits", "method": "apt", "clients": 4, "fraction": 1.0, "rounds": 6,
            "alpha": 1.0, "seed": 0}
TERMINAL = {"completed", "failed", "stopped", "interrupted"}
#: Targets of the issue: read p99 at the nominal rate, errors, slowdown of training.
P99_TARGET_MS = 100.0
SLOWDOWN_TARGET = 0.20
#: Requests still in flight beyond this count are not sent and count as errors.
MAX_IN_FLIGHT = 500
REQUEST_TIMEOUT_S = 10.0
#: The burst: more simultaneous reads than AnyIO's 40 threads + 15 pooled connections.
BURST_REQUESTS = 80
BURST_TIMEOUT_S = 5.0
BURST_RECOVERY_S = 60.0
RUN_TIMEOUT_S = 900.0


@dataclass
class Sample:
    """One request of the load: when it was due, how long it took, what came back."""

    endpoint: str
    due_s: float
    latency_ms: float
    status: int
    error: str = ""


@dataclass
class RunTiming:
    """Wall times of one run, from its rounds' ``created_at``."""

    run_id: int
    label: str
    status: str
    started_at: str
    finished_at: str
    round_ends: list[str] = field(default_factory=list)
    round_s: list[float] = field(default_factory=list)

    @property
    def steady_round_s(self) -> list[float]:
        """Rounds 2..N: round 1 also pays for starting Ray and the first model."""
        return self.round_s[1:]


def _wait_for(cond: Callable[[], Any], timeout: float, what: str, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"Timed out after {timeout:.0f} s waiting for {what}.")


class Service:
    """``aptfleet serve`` on loopback with its own data directory and SQLite file."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ,
                    "APTFLEET_DATA_DIR": str(data_dir),
                    "APTFLEET_DATABASE_URL": f"sqlite:///{data_dir / 'aptfleet.db'}",
                    "APTFLEET_SUPERLINK": "",
                    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
                    "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the service and wait for /readyz."""
        with (self.data_dir / "coordinator.log").open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "server.cli.main", "serve", "--port", str(self.port)],
                env=self.env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        _wait_for(self._ready, 120, "the coordinator to become ready", every=0.5)

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"The coordinator exited; see {self.data_dir}/coordinator.log")
        try:
            return httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def pid(self) -> int:
        """PID of the running service process."""
        assert self.proc is not None
        return self.proc.pid

    def token(self, role: str) -> str:
        """A new bearer token (the CLI prints it once; it is never logged here)."""
        return subprocess.run(
            [sys.executable, "-m", "server.cli.main", "token", "create", "--role", role,
             "--name", "load"], env=self.env, cwd=REPO, check=True, capture_output=True,
            text=True).stdout.strip()

    def stop(self) -> None:
        """SIGTERM the service's process group (it stops its run jobs), then SIGKILL."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def _job_pids(data_dir: Path) -> list[int]:
    """PIDs of ``server.coordinator.job`` processes working for the coordinator of ``data_dir``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        marker = f"APTFLEET_DATA_DIR={data_dir}".encode()
        if b"server.coordinator.job" in cmdline and marker in environ:
            pids.append(int(entry.name))
    return pids


def _settle(service: Service, patience: float = 90.0) -> bool:
    """Wait until the last run's job process exited (Ray tears down for a while after the
    run is marked completed) and the service answers /healthz quickly again.

    Returns True when the service did not recover within ``patience`` seconds and was
    restarted (same database and port), which the results report.
    """
    _wait_for(lambda: not _job_pids(service.data_dir), 300, "the run job to exit")
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
        _wait_for(quick, patience, "the service to answer quickly", every=1.0)
        return False
    except TimeoutError:
        log.warning("the service still does not answer /healthz within 0.2 s after %.0f s; "
                    "restarting it", patience)
        service.stop()
        service.start()
        return True


def _cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) used so far by process ``pid`` (None: this process)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pool_timeouts(data_dir: Path) -> int:
    """SQLAlchemy pool timeouts in the service log so far."""
    path = data_dir / "coordinator.log"
    return path.read_text(errors="replace").count("QueuePool limit") if path.exists() else 0


def _cpu_use(before: tuple[float, float], pid: int, seconds: float,
             requests: int) -> dict[str, float]:
    """CPU used by the service and by this generator since ``before`` (their CPU-s)."""
    service_s = _cpu_seconds(pid) - before[0]
    generator_s = _cpu_seconds() - before[1]
    return {"seconds": seconds, "service_cpu_s": service_s, "generator_cpu_s": generator_s,
            "service_cores": service_s / seconds if seconds else float("nan"),
            "generator_cores": generator_s / seconds if seconds else float("nan"),
            "service_ms_per_request": 1000 * service_s / requests if requests else float("nan")}


def _db_run_status(data_dir: Path, run_id: int) -> str:
    """The run's status read straight from the SQLite file: works when the API does not."""
    try:
        with sqlite3.connect(f"file:{data_dir / 'aptfleet.db'}?mode=ro", uri=True,
                             timeout=5) as connection:
            row = connection.execute("SELECT status FROM runs WHERE id = ?",
                                     (run_id,)).fetchone()
    except sqlite3.Error:
        return "unknown"
    return str(row[0]) if row else "unknown"


def _code_version() -> str:
    """Short commit of the measured code, with ``-dirty`` when its sources have edits."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=False).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "server", "client", "apt_core")
    return f"{commit}-dirty" if dirty else commit


def _parse_ts(value: str) -> datetime:
    """An API timestamp as an aware datetime (naive ones are UTC)."""
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _start_run(api: httpx.Client) -> int:
    response = api.post("/runs", json=RUN_BODY)
    response.raise_for_status()
    return int(response.json()["id"])


def _run_status(api: httpx.Client, run_id: int) -> str:
    """The run's status; "unknown" when an overloaded service does not answer in time."""
    try:
        return str(api.get(f"/runs/{run_id}").json()["status"])
    except httpx.HTTPError as exc:
        log.warning("status of run %s: %s", run_id, type(exc).__name__)
        return "unknown"


def _timing(api: httpx.Client, run_id: int, label: str) -> RunTiming:
    run = api.get(f"/runs/{run_id}").json()
    rounds = api.get(f"/runs/{run_id}/rounds").json()["data"]
    ends = [_parse_ts(r["created_at"]) for r in rounds]
    starts = [_parse_ts(run["started_at"]), *ends[:-1]]
    return RunTiming(run_id=run_id, label=label, status=run["status"],
                     started_at=run["started_at"], finished_at=run["finished_at"] or "",
                     round_ends=[r["created_at"] for r in rounds],
                     round_s=[(e - s).total_seconds() for s, e in zip(starts, ends, strict=True)])


def _train(api: httpx.Client, label: str) -> RunTiming:
    run_id = _start_run(api)
    log.info("%s: run %s started", label, run_id)
    status = _wait_for(lambda: (s := _run_status(api, run_id)) in TERMINAL and s,
                       RUN_TIMEOUT_S, f"run {run_id} to finish", every=2.0)
    timing = _timing(api, run_id, label)
    log.info("%s: run %s %s, rounds %s s", label, run_id, status,
             [round(s, 2) for s in timing.round_s])
    return timing


async def _load(base: str, token: str, run_id: int, rate: float, min_duration: float,
                max_duration: float, run_done: Callable[[], bool]) -> tuple[list[Sample], float]:
    """Send ``rate`` requests/s open-loop until ``min_duration`` passed and ``run_done()``
    (checked once a second, in a thread) or ``max_duration`` passed; returns the samples
    and the load's wall time."""
    paths = [("GET /runs", "/runs"), ("GET /runs/{id}", f"/runs/{run_id}"),
             ("GET /runs/{id}/rounds", f"/runs/{run_id}/rounds"),
             ("GET /runs/{id}/precision", f"/runs/{run_id}/precision"),
             ("GET /devices", "/devices")]
    samples: list[Sample] = []
    in_flight = 0
    limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=f"{base}/api/v1", limits=limits,
                                 timeout=REQUEST_TIMEOUT_S,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        loop = asyncio.get_running_loop()
        t0 = loop.time()

        async def one(i: int, due: float) -> None:
            nonlocal in_flight
            name, path = paths[i % len(paths)]
            in_flight += 1
            try:
                response = await client.get(path)
                samples.append(Sample(name, due - t0, (loop.time() - due) * 1000,
                                      response.status_code))
            except httpx.HTTPError as exc:
                samples.append(Sample(name, due - t0, (loop.time() - due) * 1000, 0,
                                      type(exc).__name__))
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
                samples.append(Sample(paths[i % len(paths)][0], elapsed, 0.0, 0,
                                      "not sent: too many in flight"))
                continue
            task = asyncio.create_task(one(i, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        sent_for = loop.time() - t0
        if tasks:
            await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT_S + 5)
    return samples, sent_for


async def _burst(base: str, token: str, requests: int, timeout: float) -> dict[str, Any]:
    """``requests`` simultaneous GET /runs; counts what was answered within ``timeout``."""
    limits = httpx.Limits(max_connections=requests)
    async with httpx.AsyncClient(base_url=f"{base}/api/v1", limits=limits, timeout=timeout,
                                 headers={"Authorization": f"Bearer {token}"}) as client:

        async def one() -> str:
            try:
                return str((await client.get("/runs")).status_code)
            except httpx.HTTPError as exc:
                return type(exc).__name__

        start = time.perf_counter()
        outcomes = await asyncio.gather(*(one() for _ in range(requests)))
        seconds = time.perf_counter() - start
    return {"requests": requests, "timeout_s": timeout, "seconds": seconds,
            "answered_2xx": sum(o.startswith("2") for o in outcomes),
            "outcomes": {o: outcomes.count(o) for o in sorted(set(outcomes))}}


def _recovery_s(service: Service, limit: float) -> float | None:
    """Seconds until /healthz answers within 0.2 s again; None if not within ``limit``."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        t = time.perf_counter()
        try:
            if (httpx.get(f"{service.base}/healthz", timeout=2).status_code == 200
                    and time.perf_counter() - t < 0.2):
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    return None


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _latency_summary(samples: list[Sample]) -> dict[str, float]:
    ok = [s.latency_ms for s in samples if not s.error and 200 <= s.status < 300]
    return {"count": len(samples), "p50_ms": _percentile(ok, 0.50),
            "p95_ms": _percentile(ok, 0.95), "p99_ms": _percentile(ok, 0.99),
            "max_ms": max(ok, default=float("nan")),
            "mean_ms": statistics.fmean(ok) if ok else float("nan")}


def _timeline(samples: list[Sample]) -> list[dict[str, float]]:
    """Per second of the load: requests due, 2xx answers, errors, p50 and p99 latency."""
    seconds = int(max((s.due_s for s in samples), default=-1)) + 1
    buckets: list[list[Sample]] = [[] for _ in range(seconds)]
    for sample in samples:
        buckets[int(sample.due_s)].append(sample)
    out = []
    for second, bucket in enumerate(buckets):
        ok = [s.latency_ms for s in bucket if not s.error and 200 <= s.status < 300]
        out.append({"s": second, "due": len(bucket), "ok": len(ok),
                    "errors": len(bucket) - len(ok), "p50_ms": _percentile(ok, 0.5),
                    "p99_ms": _percentile(ok, 0.99)})
    return out


def _overload(timeline: list[dict[str, float]]) -> tuple[int, int] | None:
    """(first, last) second of the first stretch of at least 3 s whose median latency
    exceeded one second, if any."""
    stretch: list[int] = []
    for point in [*timeline, {"s": -1, "ok": 1, "p50_ms": 0.0}]:  # sentinel ends a stretch
        if point["s"] >= 0 and (not point["ok"] or point["p50_ms"] > 1000):
            stretch.append(int(point["s"]))
        elif len(stretch) >= 3:
            return stretch[0], stretch[-1]
        else:
            stretch = []
    return None


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def _plot(samples: list[Sample], baselines: list[RunTiming], loaded: RunTiming,
          path: Path, rate: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [s for s in samples if not s.error and 200 <= s.status < 300]
    fig, (ax_t, ax_h, ax_r) = plt.subplots(1, 3, figsize=(16, 4.6))
    seconds = int(max((s.due_s for s in samples), default=0)) + 1
    per_second: list[list[float]] = [[] for _ in range(seconds)]
    for s in ok:
        per_second[int(s.due_s)].append(s.latency_ms)
    xs = [i for i, v in enumerate(per_second) if v]
    ax_t.scatter([s.due_s for s in ok], [s.latency_ms for s in ok], s=2, alpha=0.25,
                 color="tab:gray", label="request")
    ax_t.plot(xs, [_percentile(per_second[i], 0.5) for i in xs], label="p50 per second")
    ax_t.plot(xs, [_percentile(per_second[i], 0.99) for i in xs], label="p99 per second")
    ax_t.axhline(P99_TARGET_MS, color="tab:red", ls="--", lw=1, label="p99 target")
    ax_t.set(yscale="log", xlabel="time since load start (s)", ylabel="latency (ms)",
             title=f"Read latency at {rate:.0f} req/s during training")
    ax_t.legend(fontsize=8)
    values = [s.latency_ms for s in ok]
    if values:
        lo, hi = max(min(values), 0.1), max(values) * 1.05
        bins = [lo * (hi / lo) ** (i / 60) for i in range(61)]
        ax_h.hist(values, bins=bins, color="tab:blue")
        ax_h.set_xscale("log")
    for q, style in ((0.5, ":"), (0.95, "-."), (0.99, "--")):
        v = _percentile(values, q)
        ax_h.axvline(v, color="black", ls=style, lw=1, label=f"p{int(q * 100)} {v:.1f} ms")
    ax_h.axvline(P99_TARGET_MS, color="tab:red", ls="--", lw=1, label="p99 target")
    ax_h.set(xlabel="latency (ms, log scale)", ylabel="requests", title="Latency histogram")
    ax_h.legend(fontsize=8)
    width = 0.8 / (len(baselines) + 1)
    for k, timing in enumerate([*baselines, loaded]):
        rounds = range(1, len(timing.round_s) + 1)
        ax_r.bar([r + (k - len(baselines) / 2) * width for r in rounds], timing.round_s,
                 width=width, label=timing.label)
    ax_r.set(xlabel="round", ylabel="wall time (s)", title="Round wall times")
    ax_r.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(value: float, digits: int = 1) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"  # NaN check


def _analysis(result: dict[str, Any]) -> list[str]:
    """Why the targets were met or missed, from the figures of this measurement."""
    load, rounds, targets = result["load"], result["rounds"], result["targets"]
    idle, service, machine = result["idle"], result["service"], result["machine"]
    out = ["## Why", ""]
    all_met = all(targets[t] for t in ("p99", "errors", "slowdown"))
    if all_met:
        out += ["The issue's three targets were met in this measurement.", ""]
    out.append(
        f"The machine has {machine['cpus']} cores, shared by the coordinator, the run's "
        "`server.coordinator.job` process with its Ray workers (4 ClientApp actors and the "
        "ServerApp "
        "train on the same cores: that is what the simulation engine does), the load "
        f"generator, and other jobs (load average {machine['loadavg_before'][0]} before "
        "the benchmark started).")
    if idle["duration_s"]:
        il = idle["latency"]
        met = il["p99_ms"] < P99_TARGET_MS and idle["errors"] == 0
        out += ["", f"With no run training, the same {load['rate']:.0f} req/s "
                f"{'met' if met else 'missed'} the latency target (p99 "
                f"{_fmt(il['p99_ms'])} ms, {idle['errors']} errors)"
                + (", so the miss under training comes from sharing the cores with "
                   "training, not from the cost of a request."
                   if met and not (targets["p99"] and targets["errors"]) else ".")]
    overload = _overload(result["timeline"])
    if overload is not None:
        first, last = overload
        not_sent = sum(1 for k in load["error_kinds"] if k.startswith("not sent"))
        recovered = last < len(result["timeline"]) - 1
        out += ["", (
            f"From second {first} to second {last} of the load the coordinator answered "
            f"fewer than {load['rate']:.0f} req/s"
            + (" and then caught up" if recovered else " and did not catch up before the "
               "load ended") + " (see the time series): "
            "the open-loop requests kept arriving, queued, and waited up to "
            f"{_fmt(result['latency']['max_ms'] / 1000)} s"
            + (f"; the generator stopped sending beyond {MAX_IN_FLIGHT} requests in "
               "flight (the `not sent` errors)" if not_sent else "")
            + ". The coordinator has no admission control (no concurrency limit that "
            "answers 503 early), so it keeps accepting work it cannot serve in time, and "
            "it still serves requests whose client gave up, which costs CPU that "
            "training needed too (the loaded run's rounds slowed at the same time).")]
    burst = result["burst"]
    if service["db_pool_timeouts_before_burst"] or not targets["burst"]:
        out += ["", (
            f"{burst['answered_2xx']} of {burst['requests']} simultaneous reads were "
            "answered, and the service log holds "
            f"{service['db_pool_timeouts_before_burst']} (during the runs and their load) + "
            f"{service['db_pool_timeouts_burst']} (after the burst) SQLAlchemy `QueuePool "
            "limit of size 5 overflow 10 reached, connection timed out, timeout 30.00` "
            "errors: when requests pile up (a burst, or a CPU stall under a steady rate), "
            "the coordinator stops answering instead of slowing down. Its routes are sync "
            "(`def`): each request "
            "runs its token check, its route and its response serialisation as separate "
            "hops through AnyIO's thread pool (40 threads) while its session keeps one of "
            "the pool's 15 connections. With more requests in flight than threads plus "
            "connections, every thread waits for a connection and every connection holder "
            "waits for a thread, until the pool gives up after 30 s; an open-loop load "
            "keeps refilling the queue, so the service does not recover while the load "
            "lasts. "
            "It needs no training: the burst above hit an idle coordinator (see "
            "`test_concurrent_burst_answered_without_pool_deadlock` in "
            "tests/server/test_hardening.py). At "
            f"{load['rate']:.0f} req/s a stall of about {55 / load['rate']:.2f} s (55 "
            "requests in flight) is enough, so the steady-rate figures above hold only "
            "while the machine never stalls the coordinator that long.")]
    cpu = result.get("cpu", {}).get("load")
    if not targets["slowdown"]:
        share = ((cpu["service_cores"] + cpu["generator_cores"]) / machine["cpus"]
                 if cpu else float("nan"))
        taken = (f" During the load the coordinator used {cpu['service_cores']:.2f} of a core "
                 f"({_fmt(cpu['service_ms_per_request'])} ms of CPU per request) and the "
                 f"load generator {cpu['generator_cores']:.2f}: {share:.0%} of the machine's "
                 "CPU time. If training kept both cores busy on its own, losing that share "
                 f"alone would make its rounds up to {_fmt((1 / (1 - share) - 1) * 100, 0)} % "
                 "slower."
                 if cpu and share < 1 else "")
        out += ["", (
            f"Training was {_fmt(rounds['slowdown'] * 100)} % slower per round under load: "
            "the API and the load generator take CPU time from the Ray workers, which "
            "are CPU-bound (baselines vary by about "
            f"{_fmt(_spread([t['round_s'][1:] for t in rounds['baselines']]) * 100)} % "
            f"between themselves on this shared machine).{taken}")]
    if service["restarted_after"]:
        out += ["", "The benchmark had to restart the wedged service after: "
                f"{', '.join(service['restarted_after'])} (it did not answer /healthz "
                "quickly within 90 s)."]
    out += ["", (
        "In the compose deployment (deploy/README.md) training runs on the SuperNodes, "
        "not in the coordinator's process tree, so the API would not compete with "
        "training for CPU; the simulation engine co-locates them.")]
    return out


def _spread(groups: list[list[float]]) -> float:
    """Relative difference between the largest and smallest mean of ``groups``."""
    means = [_mean(g) for g in groups if g]
    return max(means) / min(means) - 1 if len(means) > 1 else float("nan")


def _markdown(result: dict[str, Any], command: str) -> str:
    lat, load, rounds, targets = (result["latency"], result["load"], result["rounds"],
                                  result["targets"])
    burst = result["burst"]
    yes = {True: "**met**", False: "**missed**"}
    lines = [
        "# Coordinator under read load while a run trains",
        "",
        "Command (from the repository root, in the project venv):",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Finished {result['measured_at']}"
        + (f" (code at {result['code']})" if "code" in result else "")
        + f" on {result['machine']['cpus']} CPU cores "
        f"(load average before / after: {result['machine']['loadavg_before']} / "
        f"{result['machine']['loadavg_after']}). One `aptfleet serve` process (uvicorn, "
        "one worker) on a temporary SQLite file; runs train in their own `server.coordinator.job` "
        "process on Flower's simulation engine (Ray). The load generator (async httpx, "
        "open loop, latency counted from each request's intended send time) runs on the "
        "same two cores.",
        "",
        f"Run: `POST /api/v1/runs` {json.dumps(result['run_body'])}.",
        "",
        "## Read load",
        "",
        "| figure | value |",
        "|---|---|",
        f"| nominal rate | {load['rate']:.0f} req/s |",
        f"| load duration | {load['duration_s']:.1f} s |",
        f"| requests | {lat['count']} ({load['completed']} answered 2xx) |",
        f"| throughput (2xx answers / duration) | {load['throughput_rps']:.1f} req/s |",
        f"| errors (non-2xx, timeouts, not sent) | {load['errors']} |",
        f"| p50 / p95 / p99 latency | {_fmt(lat['p50_ms'])} / {_fmt(lat['p95_ms'])} / "
        f"{_fmt(lat['p99_ms'])} ms |",
        f"| mean / max latency | {_fmt(lat['mean_ms'])} / {_fmt(lat['max_ms'])} ms |",
        *([f"| CPU of the coordinator / of the load generator | "
           f"{c['service_cores']:.2f} / {c['generator_cores']:.2f} cores "
           f"({_fmt(c['service_ms_per_request'])} ms per request) |"]
          if (c := result.get("cpu", {}).get("load")) else []),
        "",
        "| endpoint | requests | p50 ms | p95 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|",
    ]
    for name, e in result["endpoints"].items():
        lines.append(f"| `{name}` | {e['count']} | {_fmt(e['p50_ms'])} | "
                     f"{_fmt(e['p95_ms'])} | {_fmt(e['p99_ms'])} | {e['errors']} |")
    idle = result["idle"]
    if idle["duration_s"]:
        il = idle["latency"]
        lines += [
            "",
            f"Reference: the same {load['rate']:.0f} req/s for {idle['duration_s']:.0f} s "
            "right after baseline 1 finished, with no run training: p50 / p95 / p99 "
            f"{_fmt(il['p50_ms'])} / {_fmt(il['p95_ms'])} / {_fmt(il['p99_ms'])} ms, "
            f"{idle['throughput_rps']:.1f} req/s answered, {idle['errors']} errors"
            + (f"; the coordinator used {c['service_cores']:.2f} of a core "
               f"({_fmt(c['service_ms_per_request'])} ms of CPU per request)."
               if (c := result.get("cpu", {}).get("idle")) else "."),
        ]
    lines += [
        "",
        "## Round wall times",
        "",
        "From `created_at` of each round (GET /runs/{id}/rounds); round 1 starts at the "
        "run's `started_at` and also pays for starting Ray, so the comparison uses rounds "
        f"2-{len(rounds['loaded']['round_s'])}.",
        "",
        "| run | status | round wall times (s) | mean of rounds 2+ (s) | under load |",
        "|---|---|---|---|---|",
    ]
    for t in [*rounds["baselines"], rounds["loaded"]]:
        steady = t["round_s"][1:]
        lines.append(f"| {t['label']} (run {t['run_id']}) | {t['status']} | "
                     f"{', '.join(f'{s:.2f}' for s in t['round_s'])} | "
                     f"{_fmt(_mean(steady), 2)} | {'yes' if t is rounds['loaded'] else 'no'} |")
    lines += [
        "",
        f"Rounds 2+ of the loaded run that ended while the load ran: "
        f"{rounds['loaded_rounds_under_load']} of {len(rounds['loaded']['round_s']) - 1}.",
        f"Slowdown of the mean steady round under load: "
        f"{_fmt(rounds['slowdown'] * 100)} % (baseline mean "
        f"{_fmt(rounds['baseline_steady_mean_s'], 2)} s, loaded "
        f"{_fmt(rounds['loaded_steady_mean_s'], 2)} s).",
        "",
        "## Burst of simultaneous reads",
        "",
        f"After the runs, {burst['requests']} GET /api/v1/runs sent at once (client timeout "
        f"{burst['timeout_s']:.0f} s): {burst['answered_2xx']} answered 2xx in "
        f"{burst['seconds']:.1f} s; outcomes {burst['outcomes']}. /healthz answered "
        "quickly again " + (f"after {burst['recovered_after_s']:.0f} s."
                            if burst["recovered_after_s"] is not None
                            else f"not within {BURST_RECOVERY_S:.0f} s."),
        "",
        "## Targets",
        "",
        "| target | result |",
        "|---|---|",
        f"| p99 < {P99_TARGET_MS:.0f} ms at {load['rate']:.0f} req/s | "
        f"{yes[targets['p99']]} ({_fmt(lat['p99_ms'])} ms) |",
        f"| zero errors | {yes[targets['errors']]} ({load['errors']}) |",
        f"| rounds at most {SLOWDOWN_TARGET * 100:.0f} % slower under load | "
        f"{yes[targets['slowdown']]} ({_fmt(rounds['slowdown'] * 100)} %) |",
        f"| a burst of {burst['requests']} simultaneous reads answered (not an issue target) | "
        f"{yes[targets['burst']]} ({burst['answered_2xx']} of {burst['requests']}) |",
        "",
        *_analysis(result),
        "",
        "![latency over time, histogram, round wall times](load.png)",
        "",
    ]
    return "\n".join(lines)


def _endpoint_summary(samples: list[Sample]) -> dict[str, dict[str, float]]:
    names = sorted({s.endpoint for s in samples})
    out = {}
    for name in names:
        mine = [s for s in samples if s.endpoint == name]
        summary = _latency_summary(mine)
        summary["errors"] = sum(1 for s in mine if s.error or not 200 <= s.status < 300)
        out[name] = summary
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the benchmark and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=60.0,
                        help="minimum seconds of load; it goes on until the run ends")
    parser.add_argument("--max-duration", type=float, default=240.0,
                        help="hard cap on the seconds of load")
    parser.add_argument("--idle-duration", type=float, default=20.0,
                        help="seconds of the same load with no run training (0: skip)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: rewrite load.md from the load.json in --out")
    args = parser.parse_args(argv)
    if args.report_only:
        result = json.loads((args.out / "load.json").read_text())
        (args.out / "load.md").write_text(_markdown(result, result["command"]))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no log line per request
    command = (f"python -m server.cli.load --rate {args.rate:g} --duration {args.duration:g} "
               f"--idle-duration {args.idle_duration:g}")

    data_dir = Path(tempfile.mkdtemp(prefix="aptfleet-load-"))
    service = Service(data_dir)
    loadavg_before = [round(x, 2) for x in os.getloadavg()]
    try:
        service.start()
        token = service.token("operator")
        with httpx.Client(base_url=f"{service.base}/api/v1", timeout=30,
                          headers={"Authorization": f"Bearer {token}"}) as api:
            baselines = [_train(api, "baseline 1")]
            restarts: dict[str, bool] = {}
            cpu: dict[str, dict[str, float]] = {}
            _settle(service)
            idle: list[Sample] = []
            idle_for = 0.0
            if args.idle_duration > 0:  # the same load with no run training: a reference
                log.info("idle: %.0f s of load on finished run %s", args.idle_duration,
                         baselines[0].run_id)
                before = _cpu_seconds(service.pid), _cpu_seconds()
                idle, idle_for = asyncio.run(_load(
                    service.base, token, baselines[0].run_id, args.rate, args.idle_duration,
                    args.idle_duration, lambda: True))
                cpu["idle"] = _cpu_use(before, service.pid, idle_for, len(idle))
                restarts["idle"] = _settle(service)

            run_id = _start_run(api)
            log.info("loaded: run %s started", run_id)
            _wait_for(lambda: _db_run_status(data_dir, run_id) != "pending", 120,
                      f"run {run_id} to start")
            load_started = datetime.now().astimezone()
            before = _cpu_seconds(service.pid), _cpu_seconds()
            samples, sent_for = asyncio.run(_load(
                service.base, token, run_id, args.rate, args.duration, args.max_duration,
                lambda: _db_run_status(data_dir, run_id) in TERMINAL))
            load_ended = datetime.now().astimezone()
            cpu["load"] = _cpu_use(before, service.pid, sent_for, len(samples))
            _wait_for(lambda: _db_run_status(data_dir, run_id) in TERMINAL, RUN_TIMEOUT_S,
                      f"run {run_id} to finish")
            restarts["load"] = _settle(service)
            loaded = _timing(api, run_id, "under load")
            log.info("loaded: run %s %s, rounds %s s", run_id, loaded.status,
                     [round(s, 2) for s in loaded.round_s])

            baselines.append(_train(api, "baseline 2"))
            _settle(service)
            pool_timeouts_before_burst = _pool_timeouts(data_dir)
            burst = asyncio.run(_burst(service.base, token, BURST_REQUESTS, BURST_TIMEOUT_S))
            burst["recovered_after_s"] = _recovery_s(service, BURST_RECOVERY_S)
            log.info("burst: %s", burst)
    finally:
        service.stop()
        pool_timeouts = _pool_timeouts(data_dir)
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)

    latency = _latency_summary(samples)
    errors = sum(1 for s in samples if s.error or not 200 <= s.status < 300)
    completed = len(samples) - errors
    under_load = sum(
        1 for end in loaded.round_ends[1:]
        if load_started <= _parse_ts(end) <= load_ended)
    base_mean = _mean([s for t in baselines for s in t.steady_round_s])
    loaded_mean = _mean(loaded.steady_round_s)
    slowdown = loaded_mean / base_mean - 1 if base_mean == base_mean else float("nan")
    result: dict[str, Any] = {
        "measured_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command,
        "code": _code_version(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_before": loadavg_before,
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "run_body": RUN_BODY,
        "load": {"rate": args.rate, "duration_s": sent_for, "completed": completed,
                 "errors": errors, "throughput_rps": completed / sent_for if sent_for else 0,
                 "error_kinds": sorted({s.error or str(s.status) for s in samples
                                        if s.error or not 200 <= s.status < 300}),
                 "started_at": load_started.isoformat(), "ended_at": load_ended.isoformat()},
        "latency": latency,
        "endpoints": _endpoint_summary(samples),
        "timeline": _timeline(samples),
        "idle": {"duration_s": idle_for, "latency": _latency_summary(idle),
                 "errors": sum(1 for s in idle if s.error or not 200 <= s.status < 300),
                 "throughput_rps": (sum(1 for s in idle if not s.error
                                        and 200 <= s.status < 300) / idle_for
                                    if idle_for else 0.0)},
        "cpu": cpu,
        "burst": burst,
        "service": {
            "db_pool_timeouts_before_burst": pool_timeouts_before_burst,
            "db_pool_timeouts_burst": pool_timeouts - pool_timeouts_before_burst,
            "restarted_after": sorted(k for k, v in restarts.items() if v),
        },
        "rounds": {"baselines": [asdict(t) for t in baselines], "loaded": asdict(loaded),
                   "baseline_steady_mean_s": base_mean, "loaded_steady_mean_s": loaded_mean,
                   "slowdown": slowdown, "loaded_rounds_under_load": under_load},
        "targets": {"p99": latency["p99_ms"] < P99_TARGET_MS, "errors": errors == 0,
                    "slowdown": slowdown <= SLOWDOWN_TARGET,
                    "burst": burst["answered_2xx"] == burst["requests"]},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "load.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "load.md").write_text(_markdown(result, command))
    _plot(samples, baselines, loaded, args.out / "load.png", args.rate)
    log.info("p50/p95/p99 %.1f/%.1f/%.1f ms, %s errors, slowdown %.1f %%; wrote %s",
             latency["p50_ms"], latency["p95_ms"], latency["p99_ms"], errors,
             slowdown * 100, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
