"""Centralized benchmark: every method in the same training loop, results as JSON."""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset

from apt_core.config import PrecisionPolicy, resolve_policy
from apt_core.cost import (
    LayerProfile,
    model_nbytes,
    param_bits,
    profile_layers,
    tensors_nbytes,
)
from apt_core.methods import METHODS, MethodSetup, setup_method
from apt_core.optimizer import APTSGD
from apt_core.tasks.data import load_task, make_loader
from apt_core.tasks.networks import build_model
from apt_core.trainer import EpochLog, TrainMetrics, cosine_lr, train
from apt_core.wire import pack

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchConfig:
    """Shared training settings of every method in one benchmark.

    Parameters
    ----------
    epochs : int (default: 30)
    batch_size : int (default: 64)
    lr : float (default: 0.05)
        Peak learning rate of the cosine schedule (decays to 1% of it).
    momentum : float (default: 0.9)
    weight_decay : float (default: 5e-4)
    momentum_format : str (default: "int8")
        Momentum storage of the integer methods.
    threads : int (default: 1)
        torch intra-op threads (1 keeps wall-time ratios comparable on a shared box).
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    momentum_format: str = "int8"
    threads: int = 1


TASK_DEFAULTS: dict[str, BenchConfig] = {
    "digits": BenchConfig(epochs=30),
    "mnist1d": BenchConfig(epochs=40),
}


def run_one(
    task: str,
    arch: str,
    method: str,
    policy: PrecisionPolicy | None,
    seed: int,
    cfg: BenchConfig,
    on_epoch: Callable[[EpochLog], None] | None = None,
    policy_label: str | None = None,
) -> dict[str, Any]:
    """Train one (method, policy, seed) and measure it; returns one ``runs`` entry.

    ``policy_label`` names the policy in the results (default: its repr).
    """
    torch.set_num_threads(cfg.threads)
    s, profiles, m = _train_method(task, arch, method, policy, seed, cfg, on_epoch)
    n_params = sum(p.params for p in profiles.values())
    opt_state = _optimizer_state(s.optimizer)
    param_bytes = model_nbytes(s.model)
    analytic_bits, packed_bytes, final_mean = _stored_sizes(s, profiles, m.final_bits, n_params)
    return {
        "method": method,
        "policy": None if policy is None else (policy_label or repr(policy)),
        "policy_spec": None if policy is None else policy.to_dict(),
        "seed": seed,
        "accuracy": m.accuracy,
        "test_loss": m.loss,
        "energy_j": m.energy_j,
        "energy_gemm_j": m.energy_gemm_j,
        "energy_move_j": m.energy_move_j,
        "param_bits": analytic_bits,
        "param_bits_in_memory": _in_memory_bits(s, profiles, m.final_bits, analytic_bits),
        "params": n_params,
        "param_bytes_measured": param_bytes,
        "state_bytes_measured": param_bytes + tensors_nbytes(opt_state),
        "packed_bytes": packed_bytes,
        "final_mean_bits": final_mean,
        "avg_bits": m.avg_bits if m.avg_bits is not None else 32.0,
        "final_bits": m.final_bits,
        "wall_s_per_epoch": m.wall_s / cfg.epochs,
        "cpu_s_per_epoch": m.cpu_s / cfg.epochs,
        "steps": m.steps,
        "nonfinite_skips": m.nonfinite_skips,
        "overflow_shifts": m.overflow_shifts,
        "epoch_log": [e.__dict__ for e in m.epoch_log],
        "history": m.history,
    }


def _train_method(
    task: str,
    arch: str,
    method: str,
    policy: PrecisionPolicy | None,
    seed: int,
    cfg: BenchConfig,
    on_epoch: Callable[[EpochLog], None] | None,
) -> tuple[MethodSetup, dict[str, LayerProfile], TrainMetrics]:
    """Build ``arch`` for ``task``, convert it for ``method`` and train it as ``cfg`` says."""
    data = load_task(task)
    torch.manual_seed(seed)
    model = build_model(task, arch)
    example = data.x_train[:2]
    profiles = profile_layers(model, example)
    s = setup_method(
        method,
        model,
        profiles,
        policy=policy,
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        momentum_format=cfg.momentum_format,
        seed=seed,
    )
    train_loader = make_loader(
        TensorDataset(data.x_train, data.y_train), cfg.batch_size, shuffle=True, seed=seed
    )
    test_loader = make_loader(
        TensorDataset(data.x_test, data.y_test), 512, shuffle=False, seed=seed
    )
    total_steps = cfg.epochs * len(train_loader)
    m = train(
        s.model,
        train_loader,
        optimizer=s.optimizer,
        epochs=cfg.epochs,
        lr_schedule=cosine_lr(cfg.lr, total_steps),
        controller=s.controller,
        meter=s.meter,
        test_loader=test_loader,
        on_epoch=on_epoch,
        eval_every_epoch=True,
    )
    return s, profiles, m


def _optimizer_state(optimizer: APTSGD | torch.optim.Optimizer) -> list[torch.Tensor]:
    """The tensors the optimizer keeps between steps (codes and scales for APTSGD)."""
    return (
        list(optimizer.state_tensors())
        if isinstance(optimizer, APTSGD)
        else [
            v for st in optimizer.state.values() for v in st.values() if isinstance(v, torch.Tensor)
        ]
    )


def _stored_sizes(
    s: MethodSetup, profiles: dict[str, LayerProfile], final_bits: dict[str, int], n_params: int
) -> tuple[int, int, float]:
    """(analytic bits, packed bytes, final mean bits) of the trained model as stored."""
    if s.method == "fp32":
        return 32 * n_params, 4 * n_params, 32.0
    if s.method == "qat8":
        return 40 * n_params, 4 * n_params, 32.0
    analytic_bits = param_bits(profiles, final_bits)
    return analytic_bits, len(pack(s.model)), analytic_bits / n_params


def _in_memory_bits(
    s: MethodSetup, profiles: dict[str, LayerProfile], final_bits: dict[str, int], analytic: int
) -> int:
    """Bits of the GEMM-ready in-memory format: 8 per code up to 8 bits, 16 above (limbs)."""
    if s.method in ("fp32", "qat8"):
        return analytic
    return param_bits(profiles, {n: 8 if b <= 8 else 16 for n, b in final_bits.items()})


def run_bench(
    task: str,
    arch: str,
    methods: Sequence[str],
    policies: Sequence[str],
    seeds: int,
    cfg: BenchConfig | None = None,
    progress: Callable[[str, int, int, EpochLog], None] | None = None,
) -> dict[str, Any]:
    """Every method (apt once per policy) for ``seeds`` seeds; returns results.json data."""
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"method={m!r} is not one of {METHODS}.")
    cfg = cfg or TASK_DEFAULTS.get(task, BenchConfig())
    specs = list(policies or ["default"])
    resolved = [resolve_policy(spec) for spec in specs]
    jobs: list[tuple[str, PrecisionPolicy | None, str | None]] = []
    for m in methods:
        jobs.extend(
            list(zip([m] * len(specs), resolved, specs, strict=True))
            if m == "apt"
            else [(m, None, None)]
        )
    runs = []
    for seed in range(seeds):
        for i, (method, pol, spec) in enumerate(jobs):
            label = method if pol is None else f"apt[{spec}]"

            def hook(e: EpochLog, label: str = label, i: int = i, seed: int = seed) -> None:
                if progress is not None:
                    progress(label, seed, i, e)

            runs.append(run_one(task, arch, method, pol, seed, cfg, hook, spec))
            log.info("%s seed %s: accuracy %.4f", label, seed, runs[-1]["accuracy"])
    profile = {
        m: profile_step(task, arch, m, resolved[0] if m == "apt" else None, cfg)
        for m in ("fp32", "apt")
        if m in methods
    }
    return {
        "task": task,
        "model": arch,
        "seeds": seeds,
        "config": cfg.__dict__,
        "runs": runs,
        "summary": summarize(runs),
        "step_profile": profile,
    }


def profile_step(
    task: str,
    arch: str,
    method: str,
    policy: PrecisionPolicy | None,
    cfg: BenchConfig,
    steps: int = 100,
) -> dict[str, float]:
    """Process CPU milliseconds per training step, split into forward, backward and optimizer.

    The optimizer share is where APT's emulation overhead goes. Measured on one torch thread with
    one full batch.
    """
    torch.set_num_threads(cfg.threads)
    data = load_task(task)
    torch.manual_seed(0)
    model = build_model(task, arch)
    profiles = profile_layers(model, data.x_train[:2])
    s = setup_method(
        method,
        model,
        profiles,
        policy=policy,
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        momentum_format=cfg.momentum_format,
    )
    x, y = data.x_train[: cfg.batch_size], data.y_train[: cfg.batch_size]
    phases = {"forward_ms": 0.0, "backward_ms": 0.0, "optimizer_ms": 0.0}
    for i in range(steps + 5):
        s.optimizer.zero_grad()
        t0 = time.process_time()
        loss = torch.nn.functional.cross_entropy(s.model(x), y)
        t1 = time.process_time()
        loss.backward()
        t2 = time.process_time()
        s.optimizer.step()
        t3 = time.process_time()
        if i >= 5:  # warm-up steps are not counted
            for key, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                phases[key] += 1000 * dt / steps
    phases["total_ms"] = sum(phases.values())
    return phases


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean/std per (method, policy) and savings against fp32 and qat8."""
    groups: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["method"], r["policy"]), []).append(r)

    def mean(rs: list[dict[str, Any]], key: str) -> float:
        return statistics.fmean(float(r[key]) for r in rs)

    fp32 = groups.get(("fp32", None))
    qat8 = groups.get(("qat8", None))
    out = []
    for (method, policy), rs in groups.items():
        accs = [float(r["accuracy"]) for r in rs]
        row: dict[str, Any] = {
            "method": method,
            "policy": policy,
            "n": len(rs),
            "accuracy_mean": statistics.fmean(accs),
            "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "avg_bits_mean": mean(rs, "avg_bits"),
            "final_mean_bits_mean": mean(rs, "final_mean_bits"),
            "energy_j_mean": mean(rs, "energy_j"),
            "energy_gemm_j_mean": mean(rs, "energy_gemm_j"),
            "energy_move_j_mean": mean(rs, "energy_move_j"),
            "param_bits_mean": mean(rs, "param_bits"),
            "param_bytes_measured_mean": mean(rs, "param_bytes_measured"),
            "state_bytes_measured_mean": mean(rs, "state_bytes_measured"),
            "packed_bytes_mean": mean(rs, "packed_bytes"),
            "wall_s_per_epoch_mean": mean(rs, "wall_s_per_epoch"),
            "cpu_s_per_epoch_mean": mean(rs, "cpu_s_per_epoch"),
        }
        for key, ref, field in (
            ("energy_saving_vs_fp32", fp32, "energy_j"),
            ("energy_gemm_saving_vs_fp32", fp32, "energy_gemm_j"),
            ("energy_move_saving_vs_fp32", fp32, "energy_move_j"),
            ("param_memory_saving_vs_fp32", fp32, "param_bytes_measured"),
            ("state_memory_saving_vs_fp32", fp32, "state_bytes_measured"),
            ("state_memory_saving_vs_qat8", qat8, "state_bytes_measured"),
        ):
            row[key] = 1.0 - mean(rs, field) / mean(ref, field) if ref else math.nan
        for key, field in (
            ("wall_ratio_vs_fp32", "wall_s_per_epoch"),
            ("cpu_ratio_vs_fp32", "cpu_s_per_epoch"),
        ):
            row[key] = mean(rs, field) / mean(fp32, field) if fp32 else math.nan
        out.append(row)
    return out


def write_json(results: dict[str, Any], out: Path) -> Path:
    """Write ``results.json`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=1, default=_jsonable))
    return path


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    return str(x)
