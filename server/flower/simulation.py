"""`aptfleet simulate`: federated runs on Flower's simulation engine (Ray), with results.

Runs in-process through ``flwr.simulation.run_simulation``: the ServerApp is a thread of
this process, so settings, the policy provider and the recorder are passed to it directly
(``run_config`` is empty there). Writes ``results.json``, ``results.md`` and plots.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from apt_core import federated as fed
from apt_core.config import PrecisionPolicy, resolve_policy
from apt_core.federated.budget import Budget
from server.flower.budgets import class_node_config, class_report, with_budgets
from server.flower.global_model import Recorder
from server.flower.records import RoundReport
from server.flower.run_health import RunFailed
from server.flower.sampling import RECORDED_SAMPLING
from server.flower.server_app import ServerSettings, create_server_app
from server.flower.simulation_report import plot_all, write_markdown
from server.flower.strategy import PolicyProvider

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
OBJECT_STORE_BYTES = 128 * 1024**2


#: Environment that keeps Ray a single-node, loopback-only cluster. Ray reads it when it
#: is imported, so it must be set before (the coordinator's launcher puts it in each job's
#: environment). Without it Ray replaces 127.0.0.1 by the machine's address and its gRPC
#: servers (GCS, raylet, workers) listen on every interface.
LOOPBACK_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def backend_config(num_cpus: int = 2, ray_address: str | None = None) -> dict[str, Any]:
    """Ray settings for a small shared machine, or for joining an existing cluster.

    One CPU per ClientApp actor. Without ``ray_address``: a cluster of this process, every
    Ray process on 127.0.0.1 only (with :data:`LOOPBACK_RAY_ENV`), no dashboard. With it
    (``host:port`` of a running cluster's GCS, as ``ray start --head`` prints it): Flower's
    ``ray.init`` joins that cluster, whose own settings then hold (CPUs, object store).
    """
    if ray_address:
        return {
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"address": ray_address},
        }
    return {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": num_cpus,
            "object_store_memory": OBJECT_STORE_BYTES,
            "include_dashboard": False,
            "_node_ip_address": "127.0.0.1",
        },
    }


def run_federated(
    settings: ServerSettings,
    *,
    clients: int,
    provider: PolicyProvider,
    recorder: Recorder | None = None,
    node_config: Mapping[int, Mapping[str, Any]] | None = None,
    num_cpus: int = 2,
    ray_address: str | None = None,
) -> list[RoundReport]:
    """Run one federated training on the simulation engine; returns its round records.

    Parameters
    ----------
    settings : ServerSettings
        Run settings, rounds and sampling.
    clients : int
        Simulated SuperNodes (partition ids 0..clients-1).
    provider : PolicyProvider
        Asked for the policy at every round.
    recorder : Recorder | None (default: None)
        Also receives every round record (e.g. a progress bar or a DB).
    node_config : Mapping[int, Mapping[str, Any]] | None (default: None)
        Extra node config per partition id, e.g. ``{0: {"device-class": "mcu"},
        2: {"fail-at-round": 2}}``.
    num_cpus : int (default: 2)
        CPUs Ray may use (one concurrent ClientApp per CPU).
    ray_address : str | None (default: None)
        Join the Ray cluster at this ``host:port`` instead of starting one (see
        :func:`backend_config`).
    """
    from flwr.simulation import run_simulation

    from client.client_app import create_client_app

    records: list[RoundReport] = []

    def record(r: RoundReport) -> None:
        records.append(r)
        if recorder is not None:
            recorder(r)

    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # silences a Ray tip
    for key, value in LOOPBACK_RAY_ENV.items():
        os.environ.setdefault(key, value)
    # Ray workers import client/ and apt_core/ from the repo, whatever the caller's cwd.
    path = os.environ.get("PYTHONPATH", "")
    if str(REPO_ROOT) not in path.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), path) if p)
    run_simulation(
        server_app=create_server_app(settings, provider, record),
        client_app=create_client_app(node_config),
        num_supernodes=clients,
        backend_config=backend_config(num_cpus, ray_address),
    )  # type: ignore[arg-type]
    return records


def _method_result(
    method: str, settings: ServerSettings, clients: int, records: list[RoundReport]
) -> dict[str, Any]:
    rounds_log = [
        {
            "round": r.round,
            "accuracy": r.accuracy,
            "loss": r.loss,
            "energy_j": r.energy_j,
            "uplink_bytes": r.uplink_bytes,
            "downlink_bytes": r.downlink_bytes,
            "participants": r.participants,
            "failures": r.failures,
            "rejections": r.rejections,
            "mean_bits": r.mean_bits,
            "policy_version": r.policy_version,
            "global_bits": r.global_bits,
            "partitions": sorted(c.partition_id for c in r.clients if c.partition_id is not None),
        }
        for r in records
    ]
    s = settings.run
    return {
        "task": s.task,
        "arch": s.arch,
        "method": method,
        "clients": clients,
        "fraction": settings.fraction_train,
        "rounds": settings.rounds,
        "alpha": s.alpha,
        "seed": s.seed,
        "local_epochs": s.local_epochs,
        "lr": s.lr,
        "sampling": RECORDED_SAMPLING[settings.sampling],
        "rounds_log": rounds_log,
        "final_accuracy": records[-1].accuracy if records else None,
        "total_energy_j": sum(r.energy_j for r in records),
        "total_uplink_bytes": sum(r.uplink_bytes for r in records),
        "total_downlink_bytes": sum(r.downlink_bytes for r in records),
    }


def _saving(new: float, base: float) -> float | None:
    return None if not base else 1.0 - new / base


def comparison(runs: Sequence[dict[str, Any]], baseline: str = "fp32") -> dict[str, Any]:
    """Savings of every other method against ``baseline`` (fractions; 0.6 = 60% less)."""
    base = next((r for r in runs if r["method"] == baseline), None)
    if base is None:
        return {}
    out: dict[str, Any] = {"baseline": baseline}
    for r in runs:
        if r is base:
            continue
        acc, bacc = r["final_accuracy"], base["final_accuracy"]
        out[r["method"]] = {
            "energy_saving": _saving(r["total_energy_j"], base["total_energy_j"]),
            "uplink_saving": _saving(r["total_uplink_bytes"], base["total_uplink_bytes"]),
            "downlink_saving": _saving(r["total_downlink_bytes"], base["total_downlink_bytes"]),
            "accuracy_delta": None if acc is None or bacc is None else acc - bacc,
        }
    return out


def simulate(
    task: str = "digits",
    method: str | Sequence[str] = "apt",
    clients: int = 20,
    fraction: float = 0.5,
    rounds: int = 30,
    alpha: float | None = 0.5,
    seed: int = 0,
    out: Path = Path("results/simulate"),
    policy: str = "default",
    arch: str = "cnn",
    local_epochs: int = 5,
    lr: float = 0.1,
    batch_size: int = 16,
    on_round: Callable[[str, RoundReport], None] | None = None,
    provider: PolicyProvider | None = None,
    node_config: Mapping[int, Mapping[str, Any]] | None = None,
    device_classes: Sequence[str] | None = None,
    budgets: Mapping[str, Budget] | None = None,
    ray_address: str | None = None,
    sampling: str = "seeded",
) -> dict[str, Any]:
    """Run each method on the simulation engine and write results, report and plots.

    Parameters
    ----------
    task, arch : str
        Benchmark task and model.
    method : str | Sequence[str] (default: "apt")
        "apt", "fp32", "qat8" or several (run one after the other, same partitions).
    clients, fraction, rounds, alpha, seed, local_epochs, lr, batch_size
        Federation and local training settings (alpha None: IID partitions).
    out : Path
        Output directory for results.json, results.md and the PNG plots.
    policy : str (default: "default")
        Named policy or key=value overrides; served as version 1 to every round.
    on_round : Callable[[str, RoundReport], None] | None
        Progress hook, called with (method, record) after each round.
    provider : PolicyProvider | None
        Replaces the static policy (e.g. the coordinator's).
    node_config : Mapping[int, Mapping[str, Any]] | None
        Extra node config per partition id (device classes, test hooks).
    device_classes : Sequence[str] | None
        Device class of each partition id, cycled (``node_config`` entries win).
    budgets : Mapping[str, Budget] | None
        Resource budgets per device class: each round sends a budgeted class the bit cap
        its budget allows for this model and workload (``server.flower.budgets``).
    ray_address : str | None
        Join the Ray cluster at ``host:port`` instead of starting one.
    sampling : str (default: "seeded")
        "seeded": a seed trains the same devices in every run and method
        (:mod:`server.flower.sampling`); "random": Flower's sampling.

    Returns
    -------
    dict
        What results.json holds. ``status`` is "failed" when a method's run failed as a
        whole (:mod:`server.flower.run_health`); ``failures`` gives each one's reason, and
        the other methods still run.
    """
    methods = [method] if isinstance(method, str) else list(method)
    bad = [m for m in methods if m not in fed.FED_METHODS]
    if bad:
        raise ValueError(f"method {bad[0]!r} is not one of {fed.FED_METHODS}.")
    pol = resolve_policy(policy)
    static: PolicyProvider = provider or (lambda: (1, pol, {}))
    nodes = class_node_config(clients, device_classes, node_config)
    runs = []
    for m in methods:
        run = fed.RunSettings(
            task=task,
            arch=arch,
            method=m,
            local_epochs=local_epochs,
            lr=lr,
            batch_size=batch_size,
            alpha=alpha,
            seed=seed,
        )
        settings = ServerSettings(
            run=run, rounds=rounds, fraction_train=fraction, min_nodes=clients, sampling=sampling
        )
        hook = None if on_round is None else (lambda r, m=m: on_round(m, r))
        capped = with_budgets(static, budgets, run, clients)
        records: list[RoundReport] = []
        failure = _train_method(
            settings,
            clients=clients,
            provider=capped,
            recorders=[records.append, *([hook] if hook else [])],
            node_config=nodes,
            ray_address=ray_address,
        )
        result = _method_result(m, settings, clients, records)
        runs.append({**result, "classes": class_report(records), **run_status(failure)})
    results = _results(runs, methods, policy, pol)
    results["device_classes"] = list(device_classes or [])
    results["budgets"] = {c: b.to_dict() for c, b in (budgets or {}).items()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    write_markdown(results, out)
    plot_all(results, out)
    return results


def _train_method(
    settings: ServerSettings,
    *,
    clients: int,
    provider: PolicyProvider,
    recorders: list[Recorder],
    node_config: Mapping[int, Mapping[str, Any]] | None,
    ray_address: str | None,
) -> RunFailed | None:
    """Run one method to its end; why it failed as a whole (None when it did not).

    Every recorded round reaches ``recorders``, also the rounds of a run that failed.
    """

    def record(r: RoundReport) -> None:
        for recorder in recorders:
            recorder(r)

    try:
        run_federated(
            settings,
            clients=clients,
            provider=provider,
            recorder=record,
            node_config=node_config,
            ray_address=ray_address,
        )
    except RunFailed as exc:
        log.error("%s run failed: %s", settings.run.method, exc)
        return exc
    return None


def run_status(failure: RunFailed | None) -> dict[str, Any]:
    """A method result's ``status`` ("completed" or "failed") and failure reasons."""
    if failure is None:
        return {"status": "completed"}
    return {"status": "failed", "failure": str(failure), "failure_reasons": failure.reasons}


def _results(
    runs: list[dict[str, Any]], methods: list[str], policy: str, pol: PrecisionPolicy
) -> dict[str, Any]:
    """results.json: one method's result as is; several share the settings and are compared.

    ``status`` is "failed" when any method's run failed (``failures`` says why, per method).
    """
    results: dict[str, Any] = {**runs[0], "policy": policy, "policy_spec": pol.to_dict()}
    if len(runs) > 1:
        results = {
            k: v
            for k, v in results.items()
            if k
            in (
                "task",
                "arch",
                "clients",
                "fraction",
                "rounds",
                "alpha",
                "seed",
                "local_epochs",
                "lr",
                "policy",
                "policy_spec",
            )
        }
        results["methods"] = methods
        results["runs"] = runs
        results["comparison"] = comparison(runs)
    failed = {r["method"]: r["failure"] for r in runs if r["status"] == "failed"}
    results["status"] = "failed" if failed else "completed"
    results["failures"] = failed
    return results
