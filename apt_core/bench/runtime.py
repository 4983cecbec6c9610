"""Runtime benchmark: APT's step time and peak training memory as ratios to fp32.

For one (task, model, batch), an fp32 model (``torch.optim.SGD``) and one APT model per
(bits, backend) (``to_apt`` with bits fixed at b, ``APTSGD``) start from the same
initial weights and train on the same batch, interleaved step by step in one process:
each round runs one full step of every model (zero_grad, forward, cross-entropy,
backward, optimizer step), in an order rotated every round so that no model always runs
right after another. After the warm-up rounds, each step's wall time and its split
(forward = zero_grad + forward + loss, backward, optimizer) are recorded; the row gives
the medians (each phase's median separately, so the split need not sum to ``step_ms``).
Then each model's peak training memory is measured over one more step with
:func:`apt_core.bench.memory.peak_train_bytes`.

The integer kernels may add a backend switch (``apt_core.kernels.set_backend``) and a
fallback counter; both are looked up at run time (:func:`available_backends`,
:func:`_fallback_reader`) and their absence is reported, not an error.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from apt_core import APTSGD, PrecisionPolicy, to_apt
from apt_core.bench.backends import (
    _backend,
    _fallback_reader,
    _layer_fallbacks,
    available_backends,
)
from apt_core.bench.memory import peak_train_bytes
from apt_core.bench.runtime_config import DEFAULT_BITS, DEFAULT_CASES, RuntimeConfig
from apt_core.kernels import native
from apt_core.kernels.matmul import gemm_report
from apt_core.tasks.data import load_task
from apt_core.tasks.networks import build_model


@dataclass
class _Trainee:
    """One model of a case with its optimizer and the times of its steps."""

    method: str  # "fp32" or "apt"
    bits: int
    backend: str | None
    model: nn.Module
    optimizer: APTSGD | torch.optim.Optimizer
    step_s: list[float]
    phase_s: list[tuple[float, float, float]]
    fallbacks: int = 0

    @property
    def label(self) -> str:
        if self.method == "fp32":
            return "fp32"
        return f"apt {self.bits}b" + (f" [{self.backend}]" if self.backend else "")

    def step(self, x: Tensor, y: Tensor) -> tuple[float, float, float]:
        """One full training step; returns (forward, backward, optimizer) seconds."""
        t0 = time.perf_counter()
        self.optimizer.zero_grad()
        loss = F.cross_entropy(self.model(x), y)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        self.optimizer.step()
        t3 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2


def _optimizer_state(opt: APTSGD | torch.optim.Optimizer) -> list[Tensor]:
    """Tensors the optimizer keeps between steps (APTSGD.state_tensors or torch's state)."""
    if callable(getattr(opt, "state_tensors", None)):
        return list(opt.state_tensors())  # type: ignore[union-attr]
    state = getattr(opt, "state", {})
    return [v for st in state.values() for v in st.values() if isinstance(v, Tensor)]


def _batch(task: str, batch: int) -> tuple[Tensor, Tensor]:
    data = load_task(task)
    reps = -(-batch // len(data.x_train))
    # clone: a slice would keep the whole training set's storage alive in the baseline
    x = data.x_train.repeat(reps, *([1] * (data.x_train.dim() - 1)))[:batch].clone()
    y = data.y_train.repeat(reps)[:batch].clone()
    return x, y


def _trainees(
    task: str, arch: str, bits: Sequence[int], backends: Sequence[str | None], cfg: RuntimeConfig
) -> list[_Trainee]:
    torch.manual_seed(cfg.seed)
    fp32 = build_model(task, arch)
    out = [
        _Trainee(
            "fp32",
            32,
            None,
            fp32,
            torch.optim.SGD(
                fp32.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
            ),
            [],
            [],
        )
    ]
    init = fp32.state_dict()
    for b in bits:
        for backend in backends:
            model = build_model(task, arch)
            model.load_state_dict(init)
            with _backend(backend):
                policy = PrecisionPolicy(bits_init=b, bits_min=b, bits_max=b)
                model = to_apt(model, policy)
                opt = APTSGD(
                    model,
                    lr=cfg.lr,
                    momentum=cfg.momentum,
                    weight_decay=cfg.weight_decay,
                    rounding=cfg.rounding,
                )
            out.append(_Trainee("apt", b, backend, model, opt, [], []))
    return out


def work_units(
    cases: Sequence[tuple[str, str, int]],
    bits: Sequence[int],
    cfg: RuntimeConfig,
    backends: Sequence[str | None],
) -> int:
    """How many progress updates :func:`run_runtime` makes (rounds and memory steps)."""
    models = 1 + len(bits) * max(1, len(backends))
    return len(cases) * (cfg.warmup + cfg.steps + models)


def run_case(
    task: str,
    arch: str,
    batch: int,
    bits: Sequence[int],
    cfg: RuntimeConfig,
    backends: Sequence[str | None] = (None,),
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Measure fp32 and APT at every bit-width (and backend) for one (task, model, batch).

    Returns one row per model; ratios are to the fp32 row of the same case.
    """
    x, y = _batch(task, batch)
    models = _trainees(task, arch, bits, backends or (None,), cfg)
    counter = _fallback_reader()
    name = f"{task} {arch} b{batch}"
    for i in range(cfg.warmup + cfg.steps):
        k = i % len(models)
        for t in models[k:] + models[:k]:
            with _backend(t.backend):
                before = counter[1]() if counter and t.method == "apt" else 0
                phases = t.step(x, y)
                if counter and t.method == "apt":
                    t.fallbacks += counter[1]() - before
            if i >= cfg.warmup:
                t.phase_s.append(phases)
                t.step_s.append(sum(phases))
        if progress is not None:
            progress(
                f"{name}: step {i + 1}/{cfg.warmup + cfg.steps}"
                + (" (warm-up)" if i < cfg.warmup else "")
            )
    rows = []
    for t in models:
        with _backend(t.backend):
            mem = _measure_memory(t, x, y)
        if progress is not None:
            progress(f"{name}: peak memory of {t.label}")
        rows.append(_row(task, arch, batch, t, mem, cfg, counter))
    ref = rows[0]
    for r in rows:
        r["step_ratio_vs_fp32"] = r["step_ms"] / ref["step_ms"]
        r["peak_ratio_vs_fp32"] = r["peak_train_bytes"] / ref["peak_train_bytes"]
    return rows


def _measure_memory(t: _Trainee, x: Tensor, y: Tensor) -> Any:
    def step() -> None:
        F.cross_entropy(t.model(x), y).backward()
        t.optimizer.step()

    def prime() -> None:
        t.step(x, y)
        t.optimizer.zero_grad()

    def baseline() -> list[Tensor | None]:
        params = list(t.model.parameters())
        return [
            *params,
            *(p.grad for p in params),
            *t.model.buffers(),
            *_optimizer_state(t.optimizer),
            x,
            y,
        ]

    gc.collect()
    return peak_train_bytes(step, baseline, prime=prime)


def _row(
    task: str,
    arch: str,
    batch: int,
    t: _Trainee,
    mem: Any,
    cfg: RuntimeConfig,
    counter: tuple[str, Callable[[], int]] | None,
) -> dict[str, Any]:
    def med_ms(xs: Sequence[float]) -> float:
        return 1000.0 * statistics.median(xs)

    q1, _, q3 = statistics.quantiles(t.step_s, n=4) if len(t.step_s) > 1 else [t.step_s[0]] * 3
    if t.method == "fp32":
        fallbacks, source = None, None
    elif counter is not None:
        fallbacks, source = t.fallbacks, counter[0]
    else:
        fallbacks = _layer_fallbacks(t.model)
        source = None if fallbacks is None else "layer attribute"
    return {
        "task": task,
        "model": arch,
        "batch": batch,
        "method": t.method,
        "bits": t.bits,
        "backend": t.backend,
        "label": t.label,
        "step_ms": med_ms(t.step_s),
        "step_ms_q1": 1000.0 * q1,
        "step_ms_q3": 1000.0 * q3,
        "forward_ms": med_ms([p[0] for p in t.phase_s]),
        "backward_ms": med_ms([p[1] for p in t.phase_s]),
        "optimizer_ms": med_ms([p[2] for p in t.phase_s]),
        "peak_train_bytes": mem.peak_train_bytes,
        "baseline_bytes": mem.baseline_bytes,
        "step_peak_bytes": mem.step_peak_bytes,
        "retained_bytes": mem.retained_bytes,
        "numpy_peak_bytes": mem.numpy_peak_bytes,
        "unmatched_frees": mem.unmatched_frees,
        "threads": torch.get_num_threads(),
        "fallbacks": fallbacks,
        "fallback_source": source,
        "steps": len(t.step_s),
        "warmup": cfg.warmup,
    }


def run_runtime(
    cases: Sequence[tuple[str, str, int]] = DEFAULT_CASES,
    bits: Sequence[int] = DEFAULT_BITS,
    cfg: RuntimeConfig | None = None,
    backends: Sequence[str | None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every case of the grid; returns the ``results.json`` data (rows, machine, config).

    Parameters
    ----------
    cases : Sequence[tuple[str, str, int]] (default: DEFAULT_CASES)
        (task, model, batch) triples.
    bits : Sequence[int] (default: (8, 12, 16))
    cfg : RuntimeConfig | None (default: None -> RuntimeConfig())
    backends : Sequence[str | None] | None (default: None -> every available backend)
        APT backends to measure; ``(None,)`` when apt_core has no backend switch.
    progress : Callable[[str], None] | None (default: None)
        Called :func:`work_units` times with a description.
    """
    cfg = cfg or RuntimeConfig()
    chosen: Sequence[str | None] = (
        backends if backends is not None else available_backends() or (None,)
    )
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    load_before = os.getloadavg()
    try:
        rows = [
            r
            for task, arch, batch in cases
            for r in run_case(task, arch, batch, bits, cfg, chosen, progress)
        ]
    finally:
        torch.set_num_threads(threads_before)
    machine = machine_info()
    machine["loadavg_before"] = list(load_before)
    machine["loadavg_after"] = list(os.getloadavg())
    return {
        "kind": "runtime",
        "config": asdict(cfg),
        "cases": [list(c) for c in cases],
        "bits": list(bits),
        "backends": list(chosen),
        "fallback_counter": (_fallback_reader() or ("none found",))[0],
        "machine": machine,
        "rows": rows,
    }


def machine_info() -> dict[str, Any]:
    """CPU model and flags of interest, core count and library versions."""
    cpu, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8"}),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "int8_gemm": gemm_report(),
        "native_kernels": native.status(),
    }


def write_json(results: dict[str, Any], out: Path) -> Path:
    """Write ``results.json`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=1))
    return path
