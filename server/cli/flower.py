"""Federated commands: `simulate` (simulation engine) and `fleet` (deployment engine).

`fleet certs|register|up|down|status|run` drives a local deployment-engine fleet. Mount ``fl_cli``
into the main ``aptfleet`` CLI.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from apt_core.federated import RunSettings
from server.cli.fed_compare import compare_cmd

fl_cli = typer.Typer(add_completion=False, help="Federated APT: simulation and local fleet.")
fleet_cli = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="A local deployment-engine fleet (SuperLink + SuperNodes).",
)
fl_cli.add_typer(fleet_cli, name="fleet")
fl_cli.command("federated-compare")(compare_cmd)
console = Console(stderr=True)
#: Defaults of the run settings shared with the devices. clients, fraction and rounds keep
#: the benchmark's own scale (20 devices, half sampled, 30 rounds), not the ServerApp's.
_RUN = RunSettings()

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Fleet state directory (default: $APTFLEET_FLEET_DIR or /tmp/aptfleet-fleet).",
    ),
]


@fl_cli.command("simulate")
def simulate_cmd(
    task: Annotated[str, typer.Option(help="digits or mnist1d")] = _RUN.task,
    method: Annotated[
        str,
        typer.Option(help="apt, fp32, qat8, fp32-q8, or a comma-separated list (e.g. apt,fp32)"),
    ] = _RUN.method,
    clients: Annotated[int, typer.Option(min=1)] = 20,
    fraction: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.5,
    rounds: Annotated[int, typer.Option(min=1)] = 30,
    alpha: Annotated[float, typer.Option(help="Dirichlet label skew; 0 = IID")] = _RUN.alpha or 0.0,
    seed: int = _RUN.seed,
    out: Annotated[Path, typer.Option(help="output directory")] = Path("results/simulate"),
    policy: Annotated[str, typer.Option(help="named policy or key=value,...")] = "default",
    model: Annotated[str, typer.Option(help="cnn or mlp")] = _RUN.arch,
    local_epochs: Annotated[int, typer.Option(min=1)] = _RUN.local_epochs,
    lr: float = _RUN.lr,
    batch_size: Annotated[int, typer.Option(min=1)] = _RUN.batch_size,
    device_class: Annotated[
        list[str] | None,
        typer.Option(help="device class per partition, cycled (repeat: --device-class mcu ...)"),
    ] = None,
    budget: Annotated[
        list[str] | None,
        typer.Option(
            help="CLASS=BYTES[:JOULES]: a class's training-memory (and energy per round) "
            "budget; its devices get the highest bit cap that fits (modelled). Repeat per class."
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            envvar="APTFLEET_RAY_ADDRESS",
            help="host:port of an existing Ray cluster to join (ray start --head prints it); "
            "default: start one on 127.0.0.1",
        ),
    ] = None,
    sampling: Annotated[
        str,
        typer.Option(
            help="seeded: each round's devices drawn by partition id with the seed (the same "
            "devices in every run; each device is asked its partition once); random: Flower's"
        ),
    ] = "seeded",
) -> None:
    """Federated training on Flower's simulation engine (Ray).

    Writes results.json, results.md and plots: accuracy, cumulative energy and bytes,
    per-layer bits.
    """
    from server.flower.simulation import simulate

    methods = [m.strip() for m in method.split(",") if m.strip()]
    budgets = _budgets(budget or [])
    logging.getLogger("flwr").setLevel(logging.ERROR)  # the progress bar reports rounds
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as prog:
        bars = {m: prog.add_task(f"{m}", total=rounds) for m in methods}

        def on_round(m: str, r) -> None:  # type: ignore[no-untyped-def]
            acc = "n/a" if r.accuracy is None else f"{100 * r.accuracy:.1f}%"
            bits = "" if r.mean_bits is None else f" bits {r.mean_bits:.1f}"
            prog.update(
                bars[m],
                completed=r.round,
                description=f"{m}: round {r.round} acc {acc}{bits} "
                f"failed {r.failures} rejected {r.rejections}",
            )

        try:
            results = simulate(
                task=task,
                method=methods,
                clients=clients,
                fraction=fraction,
                rounds=rounds,
                alpha=alpha if alpha > 0 else None,
                seed=seed,
                out=out,
                policy=policy,
                arch=model,
                local_epochs=local_epochs,
                lr=lr,
                batch_size=batch_size,
                on_round=on_round,
                device_classes=device_class,
                budgets=budgets,
                ray_address=ray_address,
                sampling=sampling,
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    for m, c in (results.get("comparison") or {}).items():
        if m != "baseline":
            console.print(
                f"{m} vs fp32: energy saving {c['energy_saving']:.1%}, uplink saving "
                f"{c['uplink_saving']:.1%}, accuracy delta {c['accuracy_delta']:+.3f}"
            )
    command = "aptfleet " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    console.print(f"wrote {out}/results.json, results.md and plots ({command})")
    for m, why in results.get("failures", {}).items():
        console.print(f"[red]the {m} run failed[/red]: {why}", markup=True, highlight=False)
    if results.get("status") == "failed":
        raise typer.Exit(1)


def _budgets(specs: list[str]) -> dict[str, Any]:
    """``--budget`` values as budgets per class (a bad one is a usage error naming it)."""
    from server.flower.budgets import parse_budget_option

    try:
        return dict(parse_budget_option(spec) for spec in specs)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--budget") from None


def _state_dir(state_dir: Path | None) -> Path:
    from server.flower.fleet import DEFAULT_STATE_DIR

    return state_dir or DEFAULT_STATE_DIR


Hosts = Annotated[
    list[str] | None,
    typer.Option(
        "--host",
        help="name or IP address the SuperLink certificate is valid for (repeat); "
        "127.0.0.1 and localhost are always included [default: superlink]",
    ),
]


@fleet_cli.command("certs")
def fleet_certs(
    out: Annotated[Path, typer.Option("--out", help="certificates directory")],
    nodes: Annotated[int, typer.Option("--nodes", min=0, help="SuperNode key pairs")] = 2,
    host: Hosts = None,
) -> None:
    """Create the fleet's CA, the SuperLink's TLS certificate and SuperNode key pairs.

    Whatever already exists in OUT is kept (a second call with more --nodes adds keys);
    the SuperLink certificate is remade when a --host is missing from it.
    """
    from server.flower.certs import DEFAULT_HOSTS, CertificateError, ensure_certs, server_hosts

    try:
        certs = ensure_certs(out, nodes, host or DEFAULT_HOSTS)
    except (CertificateError, OSError) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    console.print(
        f"CA {certs.ca_cert}; SuperLink certificate {certs.server_cert} for "
        f"{', '.join(server_hosts(certs))}; SuperNode keys "
        f"{certs.root / 'nodes'}/node-<i>.key|.pub for i < {nodes}"
    )


@fleet_cli.command("register")
def fleet_register(
    public_keys: Annotated[
        list[Path],
        typer.Argument(
            help="SuperNode public keys (node-<i>.pub of 'fleet certs')",
            exists=True,
            dir_okay=False,
        ),
    ],
    superlink: Annotated[str, typer.Option("--superlink", help="SuperLink host:port")],
    ca: Annotated[
        Path | None,
        typer.Option(
            "--ca",
            help="CA certificate the SuperLink's certificate is verified with "
            "(default: the system's trust store)",
        ),
    ] = None,
) -> None:
    """Register SuperNode public keys with a SuperLink started with --enable-supernode-auth.

    Keys it already knows are skipped; only registered SuperNodes may connect.
    """
    from server.flower import fleet

    try:
        done = fleet.register_keys(superlink, public_keys, ca_file=ca)
    except fleet.FleetError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    for key, node_id in done.items():
        console.print(f"{key}: " + (f"node {node_id}" if node_id else "already registered"))


@fleet_cli.command("up")
def fleet_up(
    nodes: Annotated[int, typer.Option("--nodes", min=1, help="number of SuperNodes")] = 2,
    device_class: Annotated[
        list[str] | None, typer.Option(help="device class per node, cycled (repeat the option)")
    ] = None,
    state_dir: StateDir = None,
    certs: Annotated[
        Path | None,
        typer.Option(
            "--certs",
            help="certificates directory of 'fleet certs' (default: <state-dir>/certs, "
            "created if absent)",
        ),
    ] = None,
    host: Hosts = None,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure", help="plain text and no SuperNode authentication: local development only"
        ),
    ] = False,
) -> None:
    """Start a SuperLink and N SuperNodes on free loopback ports.

    TLS and SuperNode authentication are on unless --insecure.
    """
    from server.flower import fleet
    from server.flower.certs import DEFAULT_HOSTS

    if insecure:
        console.print(
            "[yellow]--insecure: no TLS and no SuperNode authentication; any "
            "process that reaches the SuperLink can join. Local development "
            "only.[/]"
        )
        if certs is not None:
            console.print("[red]--certs and --insecure exclude each other.[/]")
            raise typer.Exit(2)
    try:
        st = fleet.up(
            nodes,
            _state_dir(state_dir),
            device_classes=device_class,
            insecure=insecure,
            certs_dir=certs,
            hosts=host or DEFAULT_HOSTS,
        )
    except (fleet.FleetError, ValueError, OSError) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    security = (
        "INSECURE" if st.certs is None else f"TLS (CA {st.certs.ca_cert}), SuperNode authentication"
    )
    console.print(
        f"SuperLink on {st.address}, {security}, {nodes} SuperNodes; "
        f"connection '{fleet.CONNECTION}' in {st.cli_home}/config.toml"
    )


@fleet_cli.command("down")
def fleet_down(state_dir: StateDir = None) -> None:
    """Stop every process the fleet started."""
    from server.flower import fleet

    pids = fleet.down(_state_dir(state_dir))
    console.print(f"stopped {len(pids)} processes" if pids else "no fleet was up")


@fleet_cli.command("status")
def fleet_status(state_dir: StateDir = None) -> None:
    """Print the fleet's processes as JSON."""
    from server.flower import fleet

    typer.echo(json.dumps(fleet.status(_state_dir(state_dir)), indent=2))


@fleet_cli.command("run")
def fleet_run(
    config: Annotated[
        list[str] | None,
        typer.Option("--config", "-c", help="run_config override key=value (repeat)"),
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the run")] = 1800.0,
    state_dir: StateDir = None,
) -> None:
    """Submit the aptfleet app to the fleet and wait for it (flwr run + flwr list)."""
    from server.flower import fleet

    overrides = {}
    for item in config or []:
        k, _, v = item.partition("=")
        try:
            overrides[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            overrides[k.strip()] = v
    try:
        res = fleet.run_app(overrides, _state_dir(state_dir), timeout=timeout)
    except fleet.FleetError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    console.print(f"run {res.run_id}: {res.status} {res.details}")
    if not res.ok:
        raise typer.Exit(1)
