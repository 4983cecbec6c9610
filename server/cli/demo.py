"""`aptfleet demo`: the whole product end to end on one machine, through its REST API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from server.ports import free_port

console = Console()
demo_cli = typer.Typer(add_completion=False)


def _env(data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "APTFLEET_DATA_DIR": str(data_dir),
            "APTFLEET_DATABASE_URL": f"sqlite:///{data_dir / 'aptfleet.db'}",
            "APTFLEET_SUPERLINK": "",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_TELEMETRY_ENABLED": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
    )
    return env


def _wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the coordinator exited with code {proc.returncode}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the coordinator did not become ready within {timeout:.0f} s")


def _check(resp: httpx.Response) -> Any:
    if resp.status_code >= 400:
        raise RuntimeError(
            f"{resp.request.method} {resp.request.url.path} -> {resp.status_code}: {resp.text}"
        )
    return resp.json()


@demo_cli.command("demo")
def demo(
    clients: Annotated[int, typer.Option(min=2, max=100)] = 10,
    rounds: Annotated[int, typer.Option(min=2, max=100)] = 10,
    fraction: Annotated[float, typer.Option(min=0.1, max=1.0)] = 0.5,
    policy_change_after: Annotated[
        int, typer.Option(help="round after which the admin changes the policy")
    ] = 3,
    data_dir: Annotated[Path, typer.Option(help="state of the demo coordinator")] = Path(
        ".aptfleet/demo"
    ),
    port: Annotated[int, typer.Option(help="preferred coordinator port")] = 8080,
    keep_serving: Annotated[
        bool | None,
        typer.Option(
            help="keep the coordinator up for the dashboard (default: when run in a terminal)"
        ),
    ] = None,
) -> None:
    """Start the coordinator, run a simulated fleet, change the policy mid-run, report."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = _env(data_dir)
    port = free_port(port)
    base = f"http://127.0.0.1:{port}"
    console.print(f"[bold]aptfleet demo[/]: coordinator on {base}, state in {data_dir}")
    token = _create_admin_token(env)
    log = (data_dir / "coordinator.log").open("ab")
    server = _start_coordinator(env, port, log)
    try:
        _wait_ready(base, server)
        _run_demo(base, token, clients, rounds, fraction, policy_change_after)
        console.print(
            f"\nDashboard: [bold]{base}/[/] (sign in with the admin token {token}; it never "
            f"goes into a URL; coordinator log: {data_dir / 'coordinator.log'})"
        )
        if keep_serving if keep_serving is not None else sys.stdin.isatty():
            console.print("Serving the dashboard; press Ctrl-C to stop.")
            try:
                server.wait()
            except KeyboardInterrupt:
                pass
    finally:
        _stop_coordinator(server)
        log.close()


def _create_admin_token(env: dict[str, str]) -> str:
    """A fresh admin token, created by ``aptfleet token create`` in ``env``."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "server.cli.main",
            "token",
            "create",
            "--role",
            "admin",
            "--name",
            "demo-admin",
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def _start_coordinator(env: dict[str, str], port: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
    """``aptfleet serve`` on 127.0.0.1:``port`` in its own session, output into ``log``."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server.cli.main",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop_coordinator(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM the coordinator's session, SIGKILL it if it is not gone within 30 s."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def _run_demo(
    base: str, token: str, clients: int, rounds: int, fraction: float, change_after: int
) -> None:
    api = httpx.Client(
        base_url=f"{base}/api/v1", timeout=30, headers={"Authorization": f"Bearer {token}"}
    )
    body = {
        "task": "digits",
        "method": "apt",
        "clients": clients,
        "rounds": rounds,
        "fraction": fraction,
        "alpha": 0.5,
        "seed": 0,
    }
    run = _check(api.post("/runs", json=body))
    run_id = run["id"]
    console.print(f"Started run {run_id}: {body}")
    changed = False
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as prog:
        bar = prog.add_task(f"run {run_id}: starting Flower (Ray)", total=rounds)
        while True:
            run = _check(api.get(f"/runs/{run_id}"))
            acc = run.get("latest_accuracy")
            prog.update(
                bar,
                completed=run["current_round"],
                description=(
                    f"run {run_id} {run['status']}"
                    + ("" if acc is None else f", accuracy {100 * acc:.1f}%")
                ),
            )
            if not changed and run["current_round"] >= change_after:
                new = _check(
                    api.put(
                        "/policy",
                        json={
                            "bits_max": 10,
                            "note": f"demo: cap bits at 10 after round {change_after}",
                        },
                    )
                )
                prog.console.print(
                    f"Admin set policy version {new['version']} "
                    f"(bits_max {new['bits_max']}) after round "
                    f"{run['current_round']}"
                )
                changed = True
            if run["status"] not in ("queued", "pending", "running"):
                break
            time.sleep(1.0)
    if run["status"] != "completed":
        raise RuntimeError(f"run {run_id} ended {run['status']}: {run.get('error')}")
    _summary(api, run)


def _summary(api: httpx.Client, run: dict[str, Any]) -> None:
    run_id = run["id"]
    # a run has at most 500 rounds: one page of 1000 holds them all
    rounds = _check(api.get(f"/runs/{run_id}/rounds", params={"limit": 1000}))["data"]
    summary = _check(
        api.get(f"/runs/{run_id}/precision/summary", params={"from_round": run["current_round"]})
    )["data"]
    savings = run.get("savings") or {}
    t = Table(title=f"Run {run_id}: digits, {run['clients']} clients, {run['rounds']} rounds")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("final accuracy", f"{100 * (run['latest_accuracy'] or 0):.2f}%")
    for key, label in (
        ("energy", "client training energy vs fp32"),
        ("parameter_memory", "parameter memory vs fp32"),
        ("uplink_bytes", "uplink bytes vs fp32"),
        ("downlink_bytes", "downlink bytes vs fp32"),
    ):
        v = savings.get(key)
        t.add_row(f"saving: {label}", "n/a" if v is None else f"{100 * v:.1f}%")
    console.print(t)
    last = max((r["round"] for r in summary), default=None)
    bits = Table(title=f"Per-layer bits at round {last} (min / mean / max over devices)")
    for col in ("layer", "min", "mean", "max", "mean Gavg"):
        bits.add_column(col, justify="right" if col != "layer" else "left")
    for r in summary:
        if r["round"] == last:
            bits.add_row(
                r["layer"],
                str(r["min_bits"]),
                f"{r['mean_bits']:.2f}",
                str(r["max_bits"]),
                f"{r['mean_gavg']:.3f}",
            )
    console.print(bits)
    pv = Table(title="Policy version each round trained with")
    for col in ("round", "policy version", "accuracy", "mean bits", "uplink bytes"):
        pv.add_column(col, justify="right")
    for r in rounds:
        pv.add_row(
            str(r["round"]),
            str(r["policy_version"]),
            "" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}%",
            "" if r["mean_bits"] is None else f"{r['mean_bits']:.2f}",
            str(r["uplink_bytes"]),
        )
    console.print(pv)
