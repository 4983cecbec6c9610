"""The benchmark's phases: baselines, idle reference, the loaded run, the burst; the result.

1. a baseline run without load (then, optionally, the same load with no run training);
2. the same run while the open-loop load runs for at least ``duration`` seconds;
3. a second baseline run (so warm caches favour neither side);
4. a burst of simultaneous reads, and how long /healthz takes to answer quickly again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from server.cli.load.plot import plot
from server.cli.load.probes import code_version, cpu_seconds, cpu_use, pool_timeouts, settle
from server.cli.load.report import P99_TARGET_MS, SLOWDOWN_TARGET, markdown
from server.cli.load.runs import (
    DEFAULT_CLIENTS,
    DEFAULT_ROUNDS,
    RUN_BODY,
    RUN_TIMEOUT_S,
    TERMINAL,
    RunTiming,
    db_run_status,
    parse_ts,
    start_run,
    timing,
    train,
)
from server.cli.load.stats import (
    answered,
    endpoint_summary,
    errors,
    latency_summary,
    mean,
    timeline,
)
from server.cli.load.traffic import (
    BURST_RECOVERY_S,
    BURST_REQUESTS,
    BURST_TIMEOUT_S,
    Sample,
    burst,
    recovery_s,
    send_load,
)
from server.cli.service import Coordinator, wait_for

log = logging.getLogger("load")


@dataclass(frozen=True)
class Options:
    """What to measure and where to write it (the flags of ``aptfleet load``)."""

    rate: float = 100.0
    duration: float = 60.0
    max_duration: float = 240.0
    idle_duration: float = 20.0
    out: Path = Path("docs/results")
    keep: bool = False
    rounds: int = DEFAULT_ROUNDS
    clients: int = DEFAULT_CLIENTS
    burst: int = BURST_REQUESTS

    @property
    def command(self) -> str:
        """The command line that reproduces this measurement (defaults left out)."""
        extra = "".join(
            f" --{name} {value}"
            for name, value, default in (
                ("rounds", self.rounds, DEFAULT_ROUNDS),
                ("clients", self.clients, DEFAULT_CLIENTS),
                ("burst", self.burst, BURST_REQUESTS),
            )
            if value != default
        )
        return (
            f"aptfleet load --rate {self.rate:g} --duration {self.duration:g} "
            f"--idle-duration {self.idle_duration:g}{extra}"
        )

    @property
    def run_body(self) -> dict[str, Any]:
        """POST /runs body of every run of the benchmark."""
        return {**RUN_BODY, "rounds": self.rounds, "clients": self.clients}


@dataclass
class _Measurement:
    """What the phases measured, filled in as they go."""

    loadavg_before: list[float]
    baselines: list[RunTiming] = field(default_factory=list)
    idle: list[Sample] = field(default_factory=list)
    idle_for: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    sent_for: float = 0.0
    load_started: datetime | None = None
    load_ended: datetime | None = None
    loaded: RunTiming | None = None
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    restarts: dict[str, bool] = field(default_factory=dict)
    burst: dict[str, Any] = field(default_factory=dict)
    pool_timeouts_before_burst: int = 0
    pool_timeouts: int = 0


def run(options: Options) -> dict[str, Any]:
    """Measure on a fresh coordinator and write load.json, load.md and load.png.

    Parameters
    ----------
    options : Options
        Rate, durations, runs and output directory.

    Returns
    -------
    dict[str, Any]
        What load.json holds.
    """
    data_dir = Path(tempfile.mkdtemp(prefix="aptfleet-load-"))
    service = Coordinator(data_dir)
    m = _Measurement(loadavg_before=[round(x, 2) for x in os.getloadavg()])
    try:
        service.start(timeout=120)
        token = service.token("operator", name="load")
        with service.client(token) as api:
            _baseline_and_idle(service, api, token, options, m)
            _loaded_run(service, api, token, options, m)
            m.baselines.append(train(api, "baseline 2", options.run_body))
            settle(service)
            _burst(service, token, options, m)
    finally:
        service.stop(grace=20)
        m.pool_timeouts = pool_timeouts(data_dir)
        if not options.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    result = _result(m, options)
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "load.json").write_text(json.dumps(result, indent=2) + "\n")
    (options.out / "load.md").write_text(markdown(result, options.command))
    assert m.loaded is not None
    plot(m.samples, m.baselines, m.loaded, options.out / "load.png", options.rate)
    lat = result["latency"]
    log.info(
        "p50/p95/p99 %.1f/%.1f/%.1f ms, %s errors, slowdown %.1f %%; wrote %s",
        lat["p50_ms"],
        lat["p95_ms"],
        lat["p99_ms"],
        result["load"]["errors"],
        result["rounds"]["slowdown"] * 100,
        options.out,
    )
    return result


def _baseline_and_idle(
    service: Coordinator, api: httpx.Client, token: str, options: Options, m: _Measurement
) -> None:
    """Baseline 1, then (unless ``idle_duration`` is 0) the same load with no run training."""
    m.baselines.append(train(api, "baseline 1", options.run_body))
    settle(service)
    if options.idle_duration <= 0:
        return
    run_id = m.baselines[0].run_id
    log.info("idle: %.0f s of load on finished run %s", options.idle_duration, run_id)
    before = cpu_seconds(service.pid), cpu_seconds()
    m.idle, m.idle_for = asyncio.run(
        send_load(
            service.base,
            token,
            run_id,
            options.rate,
            options.idle_duration,
            options.idle_duration,
            lambda: True,
        )
    )
    m.cpu["idle"] = cpu_use(before, service.pid, m.idle_for, len(m.idle))
    m.restarts["idle"] = settle(service)


def _loaded_run(
    service: Coordinator, api: httpx.Client, token: str, options: Options, m: _Measurement
) -> None:
    """A run trained while the load runs; the load lasts until the run ends (bounded)."""
    data_dir = service.data_dir
    run_id = start_run(api, options.run_body)
    log.info("loaded: run %s started", run_id)
    wait_for(
        lambda: db_run_status(data_dir, run_id) not in ("queued", "pending"),
        120,
        f"run {run_id} to start",
        every=1.0,
    )
    m.load_started = datetime.now().astimezone()
    before = cpu_seconds(service.pid), cpu_seconds()
    m.samples, m.sent_for = asyncio.run(
        send_load(
            service.base,
            token,
            run_id,
            options.rate,
            options.duration,
            options.max_duration,
            lambda: db_run_status(data_dir, run_id) in TERMINAL,
        )
    )
    m.load_ended = datetime.now().astimezone()
    m.cpu["load"] = cpu_use(before, service.pid, m.sent_for, len(m.samples))
    wait_for(
        lambda: db_run_status(data_dir, run_id) in TERMINAL,
        RUN_TIMEOUT_S,
        f"run {run_id} to finish",
        every=1.0,
    )
    m.restarts["load"] = settle(service)
    m.loaded = timing(api, run_id, "under load")
    log.info(
        "loaded: run %s %s, rounds %s s",
        run_id,
        m.loaded.status,
        [round(s, 2) for s in m.loaded.round_s],
    )


def _burst(service: Coordinator, token: str, options: Options, m: _Measurement) -> None:
    """Simultaneous reads on a settled service, and its recovery."""
    m.pool_timeouts_before_burst = pool_timeouts(service.data_dir)
    m.burst = asyncio.run(burst(service.base, token, options.burst, BURST_TIMEOUT_S))
    m.burst["recovered_after_s"] = recovery_s(service.base, BURST_RECOVERY_S)
    log.info("burst: %s", m.burst)


def _result(m: _Measurement, options: Options) -> dict[str, Any]:
    """load.json: the measurement's figures and whether the targets were met."""
    assert m.loaded is not None and m.load_started is not None and m.load_ended is not None
    latency = latency_summary(m.samples)
    n_errors = errors(m.samples)
    base_mean = mean([s for t in m.baselines for s in t.steady_round_s])
    loaded_mean = mean(m.loaded.steady_round_s)
    slowdown = loaded_mean / base_mean - 1 if base_mean == base_mean else float("nan")
    return {
        "measured_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": options.command,
        "code": code_version(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": m.loadavg_before,
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "run_body": options.run_body,
        "load": _load_figures(m, options.rate),
        "latency": latency,
        "endpoints": endpoint_summary(m.samples),
        "timeline": timeline(m.samples),
        "idle": {
            "duration_s": m.idle_for,
            "latency": latency_summary(m.idle),
            "errors": errors(m.idle),
            "throughput_rps": (
                sum(1 for s in m.idle if answered(s)) / m.idle_for if m.idle_for else 0.0
            ),
        },
        "cpu": m.cpu,
        "burst": m.burst,
        "service": {
            "db_pool_timeouts_before_burst": m.pool_timeouts_before_burst,
            "db_pool_timeouts_burst": m.pool_timeouts - m.pool_timeouts_before_burst,
            "restarted_after": sorted(k for k, v in m.restarts.items() if v),
        },
        "rounds": {
            "baselines": [asdict(t) for t in m.baselines],
            "loaded": asdict(m.loaded),
            "baseline_steady_mean_s": base_mean,
            "loaded_steady_mean_s": loaded_mean,
            "slowdown": slowdown,
            "loaded_rounds_under_load": sum(
                1
                for end in m.loaded.round_ends[1:]
                if m.load_started <= parse_ts(end) <= m.load_ended
            ),
        },
        "targets": {
            "p99": latency["p99_ms"] < P99_TARGET_MS,
            "errors": n_errors == 0,
            "slowdown": slowdown <= SLOWDOWN_TARGET,
            "burst": m.burst["answered_2xx"] == m.burst["requests"],
        },
    }


def _load_figures(m: _Measurement, rate: float) -> dict[str, Any]:
    """Rate, duration, answers, errors and their kinds of the loaded phase."""
    assert m.load_started is not None and m.load_ended is not None
    n_errors = errors(m.samples)
    completed = len(m.samples) - n_errors
    return {
        "rate": rate,
        "duration_s": m.sent_for,
        "completed": completed,
        "errors": n_errors,
        "throughput_rps": completed / m.sent_for if m.sent_for else 0,
        "error_kinds": sorted({s.error or str(s.status) for s in m.samples if not answered(s)}),
        "started_at": m.load_started.isoformat(),
        "ended_at": m.load_ended.isoformat(),
    }
