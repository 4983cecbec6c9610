"""load.md: the benchmark's figures, its targets and why they were met or missed."""

from __future__ import annotations

import json
from typing import Any

from server.cli.load.stats import mean, overload, spread
from server.cli.load.traffic import BURST_RECOVERY_S, MAX_IN_FLIGHT

#: Targets of the issue: read p99 at the nominal rate, errors, slowdown of training.
P99_TARGET_MS = 100.0
SLOWDOWN_TARGET = 0.20


def markdown(result: dict[str, Any], command: str) -> str:
    """load.md: how it was measured, the figures, the targets and why they were (not) met."""
    lines = [
        *_header(result, command),
        *_read_load(result),
        *_round_times(result),
        *_burst(result),
        *_targets(result),
        "",
        *_analysis(result),
        "",
        "![latency over time, histogram, round wall times](load.png)",
        "",
    ]
    return "\n".join(lines)


def _header(result: dict[str, Any], command: str) -> list[str]:
    """Title, command, machine and the run that was trained."""
    return [
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
    ]


def _read_load(result: dict[str, Any]) -> list[str]:
    """The load's figures, per endpoint, and the idle reference."""
    lat, load = result["latency"], result["load"]
    lines = [
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
        *(
            [
                f"| CPU of the coordinator / of the load generator | "
                f"{c['service_cores']:.2f} / {c['generator_cores']:.2f} cores "
                f"({_fmt(c['service_ms_per_request'])} ms per request) |"
            ]
            if (c := result.get("cpu", {}).get("load"))
            else []
        ),
        "",
        "| endpoint | requests | p50 ms | p95 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|",
    ]
    for name, e in result["endpoints"].items():
        lines.append(
            f"| `{name}` | {e['count']} | {_fmt(e['p50_ms'])} | "
            f"{_fmt(e['p95_ms'])} | {_fmt(e['p99_ms'])} | {e['errors']} |"
        )
    idle = result["idle"]
    if idle["duration_s"]:
        il = idle["latency"]
        lines += [
            "",
            f"Reference: the same {load['rate']:.0f} req/s for {idle['duration_s']:.0f} s "
            "right after baseline 1 finished, with no run training: p50 / p95 / p99 "
            f"{_fmt(il['p50_ms'])} / {_fmt(il['p95_ms'])} / {_fmt(il['p99_ms'])} ms, "
            f"{idle['throughput_rps']:.1f} req/s answered, {idle['errors']} errors"
            + (
                f"; the coordinator used {c['service_cores']:.2f} of a core "
                f"({_fmt(c['service_ms_per_request'])} ms of CPU per request)."
                if (c := result.get("cpu", {}).get("idle"))
                else "."
            ),
        ]
    return lines


def _round_times(result: dict[str, Any]) -> list[str]:
    """Each run's round wall times and the slowdown under load."""
    rounds = result["rounds"]
    lines = [
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
        lines.append(
            f"| {t['label']} (run {t['run_id']}) | {t['status']} | "
            f"{', '.join(f'{s:.2f}' for s in t['round_s'])} | "
            f"{_fmt(mean(steady), 2)} | {'yes' if t is rounds['loaded'] else 'no'} |"
        )
    return [
        *lines,
        "",
        f"Rounds 2+ of the loaded run that ended while the load ran: "
        f"{rounds['loaded_rounds_under_load']} of {len(rounds['loaded']['round_s']) - 1}.",
        f"Slowdown of the mean steady round under load: "
        f"{_fmt(rounds['slowdown'] * 100)} % (baseline mean "
        f"{_fmt(rounds['baseline_steady_mean_s'], 2)} s, loaded "
        f"{_fmt(rounds['loaded_steady_mean_s'], 2)} s).",
    ]


def _burst(result: dict[str, Any]) -> list[str]:
    """The burst of simultaneous reads and when /healthz recovered."""
    burst = result["burst"]
    return [
        "",
        "## Burst of simultaneous reads",
        "",
        f"After the runs, {burst['requests']} GET /api/v1/runs sent at once (client timeout "
        f"{burst['timeout_s']:.0f} s): {burst['answered_2xx']} answered 2xx in "
        f"{burst['seconds']:.1f} s; outcomes {burst['outcomes']}. /healthz answered "
        "quickly again "
        + (
            f"after {burst['recovered_after_s']:.0f} s."
            if burst["recovered_after_s"] is not None
            else f"not within {BURST_RECOVERY_S:.0f} s."
        ),
    ]


def _targets(result: dict[str, Any]) -> list[str]:
    """The issue's targets, met or missed."""
    lat, load, rounds, targets = (
        result["latency"],
        result["load"],
        result["rounds"],
        result["targets"],
    )
    burst = result["burst"]
    yes = {True: "**met**", False: "**missed**"}
    return [
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
    ]


def _analysis(result: dict[str, Any]) -> list[str]:
    """Why the targets were met or missed, from the figures of this measurement."""
    targets, service, machine = result["targets"], result["service"], result["machine"]
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
        "the benchmark started)."
    )
    out += _idle_note(result) + _overload_note(result) + _pool_note(result)
    out += _slowdown_note(result)
    if service["restarted_after"]:
        out += [
            "",
            "The benchmark had to restart the wedged service after: "
            f"{', '.join(service['restarted_after'])} (it did not answer /healthz "
            "quickly within 90 s).",
        ]
    out += [
        "",
        (
            "In the compose deployment (deploy/README.md) training runs on the SuperNodes, "
            "not in the coordinator's process tree, so the API would not compete with "
            "training for CPU; the simulation engine co-locates them."
        ),
    ]
    return out


def _idle_note(result: dict[str, Any]) -> list[str]:
    """The same load with no run training, as a reference."""
    load, targets, idle = result["load"], result["targets"], result["idle"]
    out: list[str] = []
    if idle["duration_s"]:
        il = idle["latency"]
        met = il["p99_ms"] < P99_TARGET_MS and idle["errors"] == 0
        out += [
            "",
            f"With no run training, the same {load['rate']:.0f} req/s "
            f"{'met' if met else 'missed'} the latency target (p99 "
            f"{_fmt(il['p99_ms'])} ms, {idle['errors']} errors)"
            + (
                ", so the miss under training comes from sharing the cores with "
                "training, not from the cost of a request."
                if met and not (targets["p99"] and targets["errors"])
                else "."
            ),
        ]
    return out


def _overload_note(result: dict[str, Any]) -> list[str]:
    """A stretch of the load that the coordinator could not keep up with."""
    load = result["load"]
    out: list[str] = []
    stretch = overload(result["timeline"])
    if stretch is not None:
        first, last = stretch
        not_sent = sum(1 for k in load["error_kinds"] if k.startswith("not sent"))
        recovered = last < len(result["timeline"]) - 1
        out += [
            "",
            (
                f"From second {first} to second {last} of the load the coordinator answered "
                f"fewer than {load['rate']:.0f} req/s"
                + (
                    " and then caught up"
                    if recovered
                    else " and did not catch up before the load ended"
                )
                + " (see the time series): "
                "the open-loop requests kept arriving, queued, and waited up to "
                f"{_fmt(result['latency']['max_ms'] / 1000)} s"
                + (
                    f"; the generator stopped sending beyond {MAX_IN_FLIGHT} requests in "
                    "flight (the `not sent` errors)"
                    if not_sent
                    else ""
                )
                + ". The coordinator has no admission control (no concurrency limit that "
                "answers 503 early), so it keeps accepting work it cannot serve in time, and "
                "it still serves requests whose client gave up, which costs CPU that "
                "training needed too (the loaded run's rounds slowed at the same time)."
            ),
        ]
    return out


def _pool_note(result: dict[str, Any]) -> list[str]:
    """Database pool timeouts and an unanswered burst."""
    load, targets, service = result["load"], result["targets"], result["service"]
    out: list[str] = []
    burst = result["burst"]
    if service["db_pool_timeouts_before_burst"] or not targets["burst"]:
        out += [
            "",
            (
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
                "while the machine never stalls the coordinator that long."
            ),
        ]
    return out


def _slowdown_note(result: dict[str, Any]) -> list[str]:
    """Why training was slower under load than the target allows."""
    rounds, targets, machine = result["rounds"], result["targets"], result["machine"]
    out: list[str] = []
    cpu = result.get("cpu", {}).get("load")
    if not targets["slowdown"]:
        share = (
            (cpu["service_cores"] + cpu["generator_cores"]) / machine["cpus"]
            if cpu
            else float("nan")
        )
        taken = (
            f" During the load the coordinator used {cpu['service_cores']:.2f} of a core "
            f"({_fmt(cpu['service_ms_per_request'])} ms of CPU per request) and the "
            f"load generator {cpu['generator_cores']:.2f}: {share:.0%} of the machine's "
            "CPU time. If training kept both cores busy on its own, losing that share "
            f"alone would make its rounds up to {_fmt((1 / (1 - share) - 1) * 100, 0)} % "
            "slower."
            if cpu and share < 1
            else ""
        )
        out += [
            "",
            (
                f"Training was {_fmt(rounds['slowdown'] * 100)} % slower per round under load: "
                "the API and the load generator take CPU time from the Ray workers, which "
                "are CPU-bound (baselines vary by about "
                f"{_fmt(spread([t['round_s'][1:] for t in rounds['baselines']]) * 100)} % "
                f"between themselves on this shared machine).{taken}"
            ),
        ]
    return out


def _fmt(value: float, digits: int = 1) -> str:
    """``value`` with ``digits`` decimals, "n/a" for NaN."""
    return "n/a" if value != value else f"{value:.{digits}f}"  # NaN check
