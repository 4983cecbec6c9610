"""The one exact int8 x int8 -> int32 matrix product every integer kernel calls.

Two engines give bit-identical results; they differ only in speed, which depends on the CPU:

``"int8"``
    ``torch._int_mm``. On CPUs with int8 dot-product instructions (AVX-512 VNNI, AMX) it
    ran the MLP's GEMMs at 0.18-0.31x fp32's time; without them torch 2.13 falls back to
    a scalar loop: on an AVX2-only EPYC (Zen 3) this project ran on, 256x1024x1024 took
    1213 ms against 28 ms for the same product in fp32 (``aptfleet bench-runtime``
    records both times for the machine it runs on, :func:`gemm_report`).
``"fp32"``
    The same int8 codes carried in float32 through the BLAS GEMM, in reductions of at
    most ``FLOAT_EXACT_REDUCTION = 2**10``: an 8-bit product is at most ``2**14`` in
    magnitude, so every partial sum stays within ``2**24`` and is exact in float32 in any
    summation order; the pieces are summed in int32 (int64 past ``2**31``). The float
    copies are made in blocks of at most ``FLOAT_BLOCK_ELEMENTS`` so the transient stays
    small next to the int8 operands.

``set_gemm("auto")`` (the default, or ``APT_GEMM=auto|int8|fp32`` in the environment)
takes ``"int8"`` where the CPU reports int8 dot-product instructions
(:data:`INT8_DOT_FLAGS` in ``/proc/cpuinfo``); elsewhere it times both engines once per
process on a small product and keeps the faster (without those instructions ``_int_mm``
is tens of times slower, a gap no load hides). A timing alone is not trusted where the
flags answer: on a machine busy with other work it once picked ``"fp32"`` on an AVX-512
VNNI CPU, which slowed the process and sent its convolutions to the float emulation.

Convolutions on the ``"fp32"`` engine: the float32-carried im2col products measured
slower and larger than the float emulation itself (digits CNN, batch 64, 8 bits, one
thread, interleaved: 2.7x fp32's step against 1.4-1.7x for the emulation, peak 1.6x
against 1.15x), so there APT's conv layers take the emulation (counted and logged once,
like every fallback) unless :func:`set_int_conv` ``(True)`` asks for the integer kernels.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from torch import Tensor

from apt_core.kernels.backend import BackendError, log_once

GEMMS = ("auto", "int8", "fp32")
#: Longest reduction whose int32 sum of 8-bit products cannot wrap: K * 2**14 < 2**31.
INT32_EXACT_REDUCTION = (1 << 17) - 1
#: Longest reduction whose float32 partial sums of 8-bit products are all exact.
FLOAT_EXACT_REDUCTION = 1 << 10
#: Float elements of one converted operand block in the ``"fp32"`` engine (256 KiB). On the
#: MLP 64-1024-1024-10 at batch 256 (one step's peak of live tensor bytes, allocation
#: replay): 7.4 MB at 8 bits and 9.8 MB at 12 bits, against 9.0 MB and 11.3 MB with blocks
#: of 2**18 elements, for GEMMs ~15% slower than with the larger blocks.
FLOAT_BLOCK_ELEMENTS = 1 << 16

#: ``/proc/cpuinfo`` flags of the x86 int8 dot-product instructions ``torch._int_mm`` uses.
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})

_state: dict[str, str | None] = {"requested": os.environ.get("APT_GEMM", "auto"), "chosen": None}
_conv = {"always": False}


def set_int_conv(always: bool) -> None:
    """Run convolutions on the integer kernels even on the ``"fp32"`` engine (tests do)."""
    _conv["always"] = always


def int_conv_unsupported() -> str | None:
    """Why APT convolutions should not take the integer kernels here (None when they should)."""
    if _conv["always"] or get_gemm() == "int8":
        return None
    return "no fast int8 GEMM on this CPU, where the float emulation convolves faster"


def set_gemm(name: str) -> None:
    """Select the engine of :func:`int8_mm`: ``"auto"`` (probe once), ``"int8"`` or ``"fp32"``."""
    if name not in GEMMS:
        raise BackendError(f"gemm={name!r} is not one of {GEMMS}.")
    _state["requested"], _state["chosen"] = name, None


def get_gemm() -> str:
    """The engine :func:`int8_mm` uses (``"int8"`` or ``"fp32"``), probing on first use."""
    chosen = _state["chosen"]
    if chosen is None:
        requested = _state["requested"]
        if requested not in GEMMS:
            raise BackendError(f"APT_GEMM={requested!r} is not one of {GEMMS}.")
        chosen = _probe() if requested == "auto" else requested
        _state["chosen"] = chosen
        if chosen == "fp32":
            log_once(
                "gemm",
                "torch._int_mm is slower than float32 GEMM on this CPU (no int8 dot-product "
                "instructions); the integer kernels carry their int8 codes through exact "
                "float32 GEMMs instead.",
            )
    return chosen


def probe_times(m: int = 64, k: int = 512, n: int = 256, repeats: int = 2) -> dict[str, float]:
    """Best-of-``repeats`` seconds of one ``(m, k) @ (k, n)`` product per engine."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (m, k), dtype=torch.int8, generator=gen)
    b = torch.randint(-128, 128, (k, n), dtype=torch.int8, generator=gen)
    times = {}
    for name, fn in (("int8", _int8_engine), ("fp32", _float_engine)):
        best = float("inf")
        for _ in range(repeats + 1):  # the first call warms up
            t0 = time.perf_counter()
            fn(a, b)
            best = min(best, time.perf_counter() - t0)
        times[name] = best
    return times


def cpu_has_int8_dot(cpuinfo: str | Path = "/proc/cpuinfo") -> bool | None:
    """Whether the CPU reports int8 dot-product instructions (None: no flags to read)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    return bool(flags & INT8_DOT_FLAGS) if flags else None


def _probe() -> str:
    if cpu_has_int8_dot():
        return "int8"
    with _one_thread():
        times = probe_times()
    return "int8" if times["int8"] <= times["fp32"] else "fp32"


class _one_thread:  # noqa: N801 - used as a context manager
    def __enter__(self) -> None:
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.threads)


def _operand(t: Tensor) -> Tensor:
    """``t`` with row-major strides when a dimension is 1 (or ``t`` is not a plain view).

    ``_int_mm`` on CPU returned wrong sums for a transposed single-row operand and for
    operands carrying the ambiguous strides of a transposed view.
    """
    if t.shape[0] == 1 or t.shape[1] == 1:
        return t.contiguous().as_strided(t.shape, (t.shape[1], 1))
    if not (t.is_contiguous() or t.t().is_contiguous()):
        return t.contiguous()
    return t


def _int8_engine(a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
    a, b = _operand(a), _operand(b)
    return torch._int_mm(a, b) if out is None else torch._int_mm(a, b, out=out)


def _float_engine(a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
    """int32 ``a @ b``; float32 (exact) when ``out`` is float32 and ``K <= 2**10``."""
    m, k = a.shape
    n = b.shape[1]
    if out is None:
        out = torch.empty((m, n), dtype=torch.int32)
    for k0 in range(0, k, FLOAT_EXACT_REDUCTION):
        k1 = min(k0 + FLOAT_EXACT_REDUCTION, k)
        rows = min(m, max(1, FLOAT_BLOCK_ELEMENTS // (k1 - k0)))
        cols = max(1, FLOAT_BLOCK_ELEMENTS // max(k1 - k0, rows))  # b block and result
        whole_a = a[:, k0:k1].to(torch.float32) if m <= rows else None
        for n0 in range(0, n, cols):
            n1 = min(n0 + cols, n)
            bf = b[k0:k1, n0:n1].to(torch.float32)
            for m0 in range(0, m, rows):
                m1 = min(m0 + rows, m)
                af = whole_a if whole_a is not None else a[m0:m1, k0:k1].to(torch.float32)
                if k0 > 0:
                    out[m0:m1, n0:n1] += torch.mm(af, bf).to(torch.int32)
                elif out.dtype == torch.float32 and n1 - n0 == n:  # whole rows: contiguous
                    torch.mm(af, bf, out=out[m0:m1])
                else:
                    out[m0:m1, n0:n1].copy_(torch.mm(af, bf))
    return out


def int8_mm(a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
    """Exact ``a @ b`` of int8 matrices: int32, or int64 when the reduction is too long.

    ``out`` (int32, shape ``(a.shape[0], b.shape[1])``) receives the result when the
    reduction fits int32.
    """
    k = a.shape[1]
    engine = _int8_engine if get_gemm() == "int8" else _float_engine
    if k <= INT32_EXACT_REDUCTION:
        return engine(a, b, out)
    acc = torch.zeros((a.shape[0], b.shape[1]), dtype=torch.int64) if out is None else out.zero_()
    for k0 in range(0, k, INT32_EXACT_REDUCTION):
        k1 = min(k0 + INT32_EXACT_REDUCTION, k)
        acc += engine(a[:, k0:k1], b[k0:k1])
    return acc


def int8_mm_float(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` of int8 matrices as float32: exact below ``2**24``, else rounded once.

    The ``"fp32"`` engine writes its float32 GEMM result directly when the reduction fits
    one exact piece (no int32 round trip).
    """
    if get_gemm() == "fp32" and a.shape[1] <= FLOAT_EXACT_REDUCTION:
        out = torch.empty((a.shape[0], b.shape[1]), dtype=torch.float32)
        return _float_engine(a, b, out)
    return int8_mm(a, b).to(torch.float32)


def gemm_report() -> dict[str, object]:
    """The engine in use and both engines' one-thread times on a 256x1024x1024 product."""
    with _one_thread():
        times = probe_times(256, 1024, 1024, repeats=2)
    return {
        "engine": get_gemm(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "ms_256x1024x1024": {name: round(t * 1e3, 2) for name, t in times.items()},
    }
