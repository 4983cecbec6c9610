"""stress.json and stress.md: the figures of the stress scenarios and what they show."""

from __future__ import annotations

import os
import platform
from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING, Any

from server.cli.load.probes import code_version
from server.cli.load.stats import errors, latency_summary, percentile, timeline
from server.cli.load.traffic import Sample

if TYPE_CHECKING:
    from server.cli.load.stress import StressOptions


#: Seconds after the burst of run starts reported as a window of their own.
BURST_WINDOW_S = 10.0


def earlier_summary(r: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of a previous result, kept when a database is measured again."""
    return {
        "measured_at": r["measured_at"],
        "code": r["code"],
        "loadavg": r["machine"]["loadavg"],
        "reads": {
            p: {k: v[k] for k in ("count", "errors", "p50_ms", "p99_ms", "max_ms")}
            for p, v in r["reads"]["phases"].items()
        },
        "run_burst_answers": r["run_burst"]["answers"],
        "policy_answers": r["policy_writes"]["answers"],
        "verdict": r["verdict"],
    }


def _statuses(items: list[dict[str, Any]]) -> dict[str, int]:
    return dict(sorted(Counter(str(i["status"]) for i in items).items()))


def _phase_reads(samples: list[Sample], phases: dict[str, list[float]]) -> dict[str, Any]:
    """Latency summary, errors and answers of the reads due in each phase."""
    out = {}
    for name, (lo, hi) in phases.items():
        mine = [s for s in samples if lo <= s.due_s < hi]
        out[name] = {
            **latency_summary(mine),
            "errors": errors(mine),
            "answers": dict(sorted(Counter(s.error or str(s.status) for s in mine).items())),
        }
    return out


def _endpoints(samples: list[Sample], lo: float, hi: float) -> dict[str, Any]:
    names = sorted({s.endpoint for s in samples})
    return {
        n: {**latency_summary(m), "errors": errors(m)}
        for n in names
        if (m := [s for s in samples if s.endpoint == n and lo <= s.due_s < hi])
    }


def _timed(items: list[dict[str, Any]]) -> dict[str, float]:
    ms = [i["ms"] for i in items]
    return {
        "p50_ms": percentile(ms, 0.5),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": max(ms, default=float("nan")),
    }


def result_of(
    database: str,
    described: str,
    options: StressOptions,
    tl: dict[str, Any],
    checks: dict[str, Any],
    loadavg: dict[str, list[float]],
    log_text: str,
) -> dict[str, Any]:
    """One database's entry of stress.json."""
    samples, writes = tl["samples"], tl["writes"]
    stalled = tl["stalled"]
    windows = _windows(tl)
    reads = _phase_reads(samples, windows)
    verdict = _verdict(options, tl, checks, reads)
    return {
        "database": database,
        "database_described": described,
        "command": options.command(database),
        "measured_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "code": code_version(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg": loadavg,
        },
        "settings": {
            "coordinator": {f"APTFLEET_{k}": v for k, v in tl["limits"].items()},
            "run_body": options.run_body,
        },
        "phases": tl["phases"],
        "burst_at_s": round(tl["burst_at_s"], 2),
        "reads": {
            "rate": options.rate,
            "phases": reads,
            "windows": windows,
            "stress_endpoints": _endpoints(samples, *tl["phases"]["stress"]),
            "timeline": timeline(samples),
        },
        "stalled": {
            **stalled.summary(),
            "started_at_s": tl["phases"]["stress"][0],
            "open_per_s": stalled.open_per_s,
        },
        "run_burst": _run_burst(options, tl, checks),
        "policy_writes": {
            "writers": options.writers,
            "writes_each": options.writes,
            "attempts": len(writes),
            "answers": _statuses(writes),
            **_timed(writes),
            "check": checks["policy"],
        },
        "server_log": {
            "tracebacks": log_text.count("Traceback"),
            "database_locked": log_text.count("database is locked"),
            "pool_timeouts": log_text.count("QueuePool limit"),
        },
        "verdict": verdict,
    }


def _windows(tl: dict[str, Any]) -> dict[str, list[float]]:
    """The phases, plus the stress phase cut into the burst's first 10 s and the rest."""
    burst_at = tl["burst_at_s"]
    return {
        **tl["phases"],
        "stress, burst +10 s": [
            burst_at,
            min(burst_at + BURST_WINDOW_S, tl["phases"]["stress"][1]),
        ],
        "stress, rest": [burst_at + BURST_WINDOW_S, tl["phases"]["stress"][1]],
    }


def _verdict(
    options: StressOptions, tl: dict[str, Any], checks: dict[str, Any], reads: dict[str, Any]
) -> dict[str, bool]:
    """Whether each claim of the stress scenarios held."""
    samples, burst, writes = tl["samples"], tl["burst"], tl["writes"]
    no_5xx = not any(500 <= s.status for s in samples) and not any(
        i["status"] >= 500 or i["status"] == 0 for i in [*burst, *writes]
    )
    snapshots = tl["snapshots"]
    return {
        "no_5xx_or_unanswered_writes": no_5xx,
        "every_run_start_201": all(b["status"] == 201 for b in burst),
        "no_run_lost": not checks["runs"]["lost"]
        and not checks["runs"]["abnormal"]
        and checks["runs"]["created"] == options.run_burst,
        "queue_positions_consistent": checks["runs"]["queue"]["consistent"]
        and all(s["consistent"] for s in snapshots),
        "policy_writes_200_or_409": all(w["status"] in (200, 409) for w in writes),
        "policy_history_without_gaps": checks["policy"]["contiguous"]
        and checks["policy"]["one_version_per_200"]
        and not checks["policy"]["duplicates"],
        "reads_all_answered": all(p["errors"] == 0 for p in reads.values()),
    }


def _run_burst(
    options: StressOptions, tl: dict[str, Any], checks: dict[str, Any]
) -> dict[str, Any]:
    """The run-start burst: answers, latency, the runs check and the queue snapshots."""
    burst, snapshots = tl["burst"], tl["snapshots"]
    return {
        "requests": options.run_burst,
        "answers": _statuses(burst),
        **_timed(burst),
        "returned_status": dict(Counter(str(b.get("run_status")) for b in burst)),
        "check": checks["runs"],
        "queue_snapshots": {
            "count": len(snapshots),
            "consistent": sum(s["consistent"] for s in snapshots),
            "in_id_order": sum(bool(s.get("id_order")) for s in snapshots),
            "queued": [s.get("queued") for s in snapshots],
        },
        "stop_answers": checks["stop_answers"],
        "jobs_exited_after_stop": checks["jobs_exited_after_stop"],
    }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.1f}"


def markdown(report: dict[str, Any]) -> str:
    """stress.md: how it was measured, a table per database, what it shows and not."""
    dbs = report["databases"]
    lines = [
        "# Coordinator under stress: stalled clients, run-start burst, policy writes",
        "",
        "Measured by the load tool's stress scenario (`server/cli/load/stress.py`), "
        "one command per database (giving both `--database` flags runs them in turn), "
        "from the repository root in the project venv:",
        "",
        "```bash",
        *(r["command"] for r in dbs.values()),
        "```",
        "",
        *_setup(dbs),
        "",
    ]
    for name, r in dbs.items():
        lines += _table(name, r)
    lines += [*_proves(), "", "![read latency per second, phases shaded](stress.png)", ""]
    return "\n".join(lines)


def _setup(dbs: dict[str, Any]) -> list[str]:
    r = next(iter(dbs.values()))
    lines = [
        "Each command starts a real `aptfleet serve` process (uvicorn, one worker) on "
        "127.0.0.1 with its real run launcher, on a new empty database, and drives it from "
        "one async process on the same machine. Timeline: *idle* (steady reads only), "
        "*stress* (stalled sockets held throughout; after "
        f"{r['burst_at_s'] - r['phases']['stress'][0]:.0f} s the burst of run starts and "
        "the policy writers), *after* (stalled sockets closed, reads go on while the admitted "
        "run still trains). Reads are "
        f"open loop at {r['reads']['rate']:g} req/s over GET /api/v1/runs, "
        "/api/v1/devices and /healthz in turn, latency counted from the intended send time.",
        "",
        f"`APTFLEET_MAX_ACTIVE_RUNS={r['settings']['coordinator']['APTFLEET_MAX_ACTIVE_RUNS']}`"
        " (the shipped default): the admission queue really starts runs one at a time while the "
        "rest wait queued, so the queue moves during the stress and Ray's start-up and "
        "training load the same two cores as the reads. Runs are kept cheap "
        f"(`{r['settings']['run_body']}`). Coordinator limits (the defaults): "
        + ", ".join(f"`{k}={v}`" for k, v in r["settings"]["coordinator"].items())
        + ". The stalled sockets connect from "
        "127.0.0.2 (another client address), the legitimate clients from 127.0.0.1.",
        "",
    ]
    for name, r in dbs.items():
        la = r["machine"]["loadavg"]
        lines.append(
            f"- {name}: {r['database_described']}; finished {r['measured_at']}, "
            f"code {r['code']}, {r['machine']['cpus']} cores, load average "
            f"before {la['before']}, end of stress {la.get('end_of_stress')}, "
            f"after {la.get('after')}."
        )
    return lines


def _table(name: str, r: dict[str, Any]) -> list[str]:
    ph, st, rb, pw = r["reads"]["phases"], r["stalled"], r["run_burst"], r["policy_writes"]
    windows = r["reads"].get("windows", r["phases"])
    rows = [
        f"| reads, {p} ({windows[p][1] - windows[p][0]:.0f} s) | "
        f"{v['count']} requests, {v['errors']} errors; p50 / p99 / max "
        f"{_fmt(v['p50_ms'])} / {_fmt(v['p99_ms'])} / {_fmt(v['max_ms'])} ms |"
        for p, v in ph.items()
    ]
    closed = "; ".join(
        f"{kind}: "
        + ", ".join(
            f"{o} x{c['count']} after {c['held_s_min']}-{c['held_s_max']} s"
            for o, c in outs.items()
        )
        for kind, outs in st["closed_by_server"].items()
    )
    chk, pc = rb["check"], pw["check"]
    rows.append(_endpoints_row(r["reads"]["stress_endpoints"]))
    rows += [
        f"| stalled sockets (slots {st['slots']}) | open during stress: min "
        f"{st['open_min_during']}, max {st['open_max_during']}; {st['connects']} connects |",
        f"| stalled sockets closed by the server | {closed or 'none'} |",
        f"| run-start burst: {rb['requests']} simultaneous POST /runs | answers "
        f"{rb['answers']}; latency p50 / max {_fmt(rb['p50_ms'])} / {_fmt(rb['max_ms'])} ms |",
        f"| runs afterwards | {chk['created']} created, {len(chk['lost'])} lost, "
        f"{len(chk['abnormal'])} in another state; {chk['statuses']} |",
        f"| queue positions 1..k in (created_at, id) order | final: "
        f"{chk['queue']['consistent']}; snapshots consistent "
        f"{rb['queue_snapshots']['consistent']} of {rb['queue_snapshots']['count']} "
        f"(queued {rb['queue_snapshots']['queued']}); also in id order: final "
        f"{chk['queue']['id_order']}, snapshots {rb['queue_snapshots']['in_id_order']} |",
        f"| unfinished runs stopped at the end | answers {rb['stop_answers']}; jobs exited: "
        f"{rb['jobs_exited_after_stop']} |",
        f"| policy writes: {pw['writers']} admins x up to {pw['writes_each']} PUT | "
        f"{pw['attempts']} sent, answers {pw['answers']}; p50 / p99 / max "
        f"{_fmt(pw['p50_ms'])} / {_fmt(pw['p99_ms'])} / {_fmt(pw['max_ms'])} ms |",
        f"| policy history | {pc['versions']} versions, contiguous 1..n: {pc['contiguous']}, "
        f"duplicates {pc['duplicates']}, one version per 200: {pc['one_version_per_200']} |",
        f"| coordinator log | {r['server_log']} |",
    ]
    verdict = ", ".join(f"{k}: **{'yes' if v else 'NO'}**" for k, v in r["verdict"].items())
    return [
        f"## {name}",
        "",
        "| figure | measured |",
        "|---|---|",
        *rows,
        "",
        f"Checks: {verdict}.",
        "",
        *([f"Note: {r['note']}", ""] if r.get("note") else []),
        *_earlier(r.get("earlier", [])),
    ]


def _endpoints_row(endpoints: dict[str, Any]) -> str:
    """The table row of read latencies and errors per endpoint during the stress phase."""
    return (
        "| reads during stress, per endpoint | "
        + "; ".join(
            f"`{n}` p50 / p99 / max {_fmt(e['p50_ms'])} / {_fmt(e['p99_ms'])} / "
            f"{_fmt(e['max_ms'])} ms, {e['errors']} errors"
            for n, e in endpoints.items()
        )
        + " |"
    )


def _earlier(runs: list[dict[str, Any]]) -> list[str]:
    """One line per earlier measurement of the same database (same command)."""
    if not runs:
        return []
    lines = ["Earlier runs of the same command (the spread is the shared machine's):", ""]
    for e in runs:
        reads = "; ".join(
            f"{p} p50 / p99 / max {_fmt(v['p50_ms'])} / {_fmt(v['p99_ms'])} / "
            f"{_fmt(v['max_ms'])} ms, {v['errors']} errors"
            for p, v in e["reads"].items()
        )
        lines.append(
            f"- {e['measured_at']} (code {e['code']}, load average before / end "
            f"of stress {e['loadavg']['before']} / "
            f"{e['loadavg'].get('end_of_stress')}): reads {reads}; run starts "
            f"{e['run_burst_answers']}; policy writes {e['policy_answers']}; all "
            f"checks passed: {all(e['verdict'].values())}."
            + (f" Note: {e['note']}" if e.get("note") else "")
        )
    return [*lines, ""]


def _proves() -> list[str]:
    return [
        "## What each scenario shows",
        "",
        "- **Stalled connections** (issue 10, fault 1): half the sockets send a request "
        "head without its end and then one byte every 2 s (slowloris), half a complete "
        "POST head announcing 100 kB and one body byte every 2 s; each is reopened 1 s "
        "after the server closes it. Heads are cut by the head deadline (closed without "
        "response), bodies answered 408 by the body time-out; body sockets beyond the "
        "per-address limit get 429 at once. Meanwhile /healthz and authenticated reads "
        "from another address keep answering (the read rows). The open count dips for "
        "about a second each time the head sockets, opened together, are cut together.",
        "- **Run-start burst** (faults 2 and 3): every simultaneous POST /runs is a 201 "
        "and its run is stored queued; the admission queue starts them one at a time; "
        "no run is lost or left in a failed state; the queue positions the API shows "
        "are 1..k in admission order (created_at, then id, as the launcher admits them), in "
        "the final check and in the snapshots taken every 5 s while the queue moved; every "
        "unfinished run could be stopped (a queued one too). Concurrent inserts may take "
        "ids and timestamps in different orders, so the id order is reported, not required.",
        "- **Concurrent policy writes** (fault 3): admins writing at once get only 200 or "
        "409 (a version conflict), never a 5xx, and the history holds each version once, "
        "1..n without gaps, exactly one per 200. `PolicyUpdate` has no expected-version "
        "field: a PUT creates current + 1, and a writer that lost the race for that number "
        "gets 409. On SQLite the write transactions (BEGIN IMMEDIATE) run one after the "
        "other, so writers that read the version inside them do not collide and 409s are "
        "not expected there; on PostgreSQL they are.",
        "- **Reads during all of it**: p50 / p99 / max and errors per phase.",
        "",
        "## Not covered",
        "",
        "- One machine, 2 shared cores: the load generator, the coordinator, PostgreSQL and "
        "Ray share them, so the latencies are upper bounds for this box, not a capacity "
        "figure. Loopback only: no network latency, no TLS in front of the coordinator.",
        "- Stalled clients from one other address; many addresses (a botnet) are bounded "
        "only by the process's open-file limit and the head/body deadlines, not measured.",
        "- Runs are 1 round of 2 clients and only a few finish within the window; the "
        "burst's runs are stopped at the end, not trained to completion. Long training "
        "under read load is `docs/results/load.md`.",
        "- The coordinator is not restarted during the stress (queue survival across a "
        "restart and job heartbeats are covered by tests, not here); the dashboard, the "
        "token endpoints and the SuperLink (deployment engine) are not exercised.",
    ]
