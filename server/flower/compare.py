"""``aptfleet federated-compare``: every method on every seed, summarised over seeds.

Each (seed, method) run is one :func:`server.flower.simulation.simulate` call writing
``<out>/seed-<S>/<method>/results.json``; a run whose results file already holds the same
settings is read back instead of being run again, so an interrupted comparison resumes.
A run's accuracy is the mean test accuracy of its last :data:`LAST_ROUNDS` rounds; the
summary gives, per method, the mean over seeds and the sample standard deviation and
min-max over seeds, and savings against fp32 (per seed, then averaged).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apt_core import federated as fed
from apt_core.config import NAMED_POLICIES
from server.flower.sampling import SAMPLING

#: Rounds at the end of a run whose test accuracies are averaged into its accuracy.
LAST_ROUNDS = 5
BASELINE = "fp32"


@dataclass(frozen=True)
class MethodSpec:
    """A compared method: its name, the federated method it runs and the APT policy."""

    name: str
    method: str
    policy: str = "default"


def parse_method(name: str) -> MethodSpec:
    """``apt``, ``fp32``, ``qat8``, ``fp32-q8`` or ``apt-<named policy>`` (e.g. apt-aggressive).

    Raises
    ------
    ValueError
        Naming the method that is none of these.
    """
    if name in fed.FED_METHODS:
        return MethodSpec(name, name)
    if name.startswith("apt-") and name[4:] in NAMED_POLICIES:
        return MethodSpec(name, "apt", name[4:])
    named = ", ".join(f"apt-{p}" for p in NAMED_POLICIES if p != "default")
    raise ValueError(f"method {name!r} is not one of {', '.join(fed.FED_METHODS)}, {named}.")


def run_accuracy(run: Mapping[str, Any], last: int = LAST_ROUNDS) -> float | None:
    """Mean test accuracy over the run's last ``last`` rounds (rounds without one skipped)."""
    accs = [x["accuracy"] for x in run["rounds_log"][-last:] if x["accuracy"] is not None]
    return sum(accs) / len(accs) if accs else None


def _spread(values: Sequence[float]) -> dict[str, float | None]:
    """Mean, sample std (None for one value), min and max."""
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "min": min(values),
        "max": max(values),
    }


def _saving(new: float, base: float) -> float | None:
    return 1.0 - new / base if base else None


def _seed_row(run: Mapping[str, Any], base: Mapping[str, Any] | None) -> dict[str, Any]:
    """One run's figures, and its savings and accuracy gap against the same seed's fp32."""
    acc = run_accuracy(run)
    row: dict[str, Any] = {
        "accuracy": acc,
        "final_accuracy": run["final_accuracy"],
        "energy_j": run["total_energy_j"],
        "uplink_bytes": run["total_uplink_bytes"],
        "downlink_bytes": run["total_downlink_bytes"],
    }
    if base is not None:
        bacc = run_accuracy(base)
        row["accuracy_delta"] = None if acc is None or bacc is None else acc - bacc
        for key in ("energy", "uplink", "downlink"):
            unit = "_j" if key == "energy" else "_bytes"
            row[f"{key}_saving"] = _saving(row[key + unit], base[f"total_{key}{unit}"])
    return row


def summarise(runs: Mapping[str, Mapping[int, Mapping[str, Any]]]) -> dict[str, Any]:
    """Per method: each seed's row and the mean/std/min/max over seeds of every figure.

    ``runs`` maps method name -> seed -> the run's results (as ``simulate`` writes them).
    """
    base = runs.get(BASELINE, {})
    out: dict[str, Any] = {}
    for name, by_seed in runs.items():
        rows = {s: _seed_row(r, base.get(s)) for s, r in sorted(by_seed.items())}
        keys = rows[next(iter(rows))].keys() if rows else []
        stats = {}
        for k in keys:
            vals = [row[k] for row in rows.values() if row.get(k) is not None]
            stats[k] = _spread(vals) if vals else None
        out[name] = {"seeds": rows, "over_seeds": stats}
    return out


#: Settings a run's results.json records, which a saved run must match to be reused
#: (batch_size is not recorded there).
_RECORDED = (
    "task", "arch", "clients", "fraction", "rounds", "alpha", "local_epochs", "lr",
    "seed", "method", "policy", "sampling",
)  # fmt: skip


def _matches(saved: Mapping[str, Any], want: Mapping[str, Any]) -> bool:
    """Same recorded settings and, for apt, the same policy fields.

    A run under a named policy whose definition changed since (the default's rounding) is
    run again.
    """
    if any(saved.get(k) != v for k, v in want.items() if k in _RECORDED):
        return False
    if want.get("method") != "apt":
        return True
    return saved.get("policy_spec") == NAMED_POLICIES[want["policy"]].to_dict()


def load_or_run(
    spec: MethodSpec,
    seed: int,
    out: Path,
    settings: Mapping[str, Any],
    run: Callable[..., dict[str, Any]],
) -> dict[str, Any]:
    """The results of one (seed, method) run, read from ``out`` if it holds the same run."""
    want = {
        **settings,
        "seed": seed,
        "method": spec.method,
        "policy": spec.policy,
        "sampling": SAMPLING,
    }
    path = out / "results.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if _matches(saved, want):
            return saved
    return run(method=[spec.method], seed=seed, policy=spec.policy, out=out, **settings)


def compare(
    methods: Sequence[str],
    seeds: Sequence[int],
    out: Path,
    settings: Mapping[str, Any],
    run: Callable[..., dict[str, Any]] | None = None,
    on_run: Callable[[str, int], None] | None = None,
) -> dict[str, Any]:
    """Run (or read back) every method on every seed, seed by seed; write ``compare.json``.

    Parameters
    ----------
    methods : Sequence[str]
        Method names for :func:`parse_method`; fp32 must be one of them (the baseline).
    seeds : Sequence[int]
    out : Path
        Runs go to ``out/seed-<S>/<method>/``; the summary to ``out/compare.json``.
    settings : Mapping[str, Any]
        The other :func:`simulate` arguments (task, clients, fraction, rounds, alpha, ...).
    run : Callable | None
        The runner (default :func:`server.flower.simulation.simulate`).
    on_run : Callable[[str, int], None] | None
        Called with (method, seed) before each run.
    """
    specs = [parse_method(m) for m in methods]
    if BASELINE not in [s.name for s in specs]:
        raise ValueError(f"methods {list(methods)!r} must include the baseline {BASELINE!r}.")
    if run is None:
        from server.flower.simulation import simulate

        run = simulate
    runs: dict[str, dict[int, dict[str, Any]]] = {s.name: {} for s in specs}
    for seed in seeds:
        for spec in specs:
            if on_run is not None:
                on_run(spec.name, seed)
            target = out / f"seed-{seed}" / spec.name
            runs[spec.name][seed] = load_or_run(spec, seed, target, settings, run)
    result = {
        "settings": dict(settings),
        "seeds": list(seeds),
        "methods": [s.__dict__ for s in specs],
        "last_rounds": LAST_ROUNDS,
        "summary": summarise(runs),
        "curves": curves(runs),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(result, indent=2))
    return result


def curves(runs: Mapping[str, Mapping[int, Mapping[str, Any]]]) -> dict[str, Any]:
    """Per method and round, over seeds: mean accuracy, cumulative energy and bytes."""
    out: dict[str, Any] = {}
    for name, by_seed in runs.items():
        logs = [r["rounds_log"] for r in by_seed.values()]
        n = min(len(lg) for lg in logs)
        acc, energy, nbytes = [], [], []
        cum = [[0.0, 0.0] for _ in logs]
        for i in range(n):
            accs = [lg[i]["accuracy"] for lg in logs if lg[i]["accuracy"] is not None]
            acc.append(statistics.fmean(accs) if accs else None)
            for c, lg in zip(cum, logs, strict=True):
                c[0] += lg[i]["energy_j"]
                c[1] += lg[i]["uplink_bytes"] + lg[i]["downlink_bytes"]
            energy.append(statistics.fmean(c[0] for c in cum))
            nbytes.append(statistics.fmean(c[1] for c in cum))
        out[name] = {"accuracy": acc, "energy_j": energy, "total_bytes": nbytes}
    return out
