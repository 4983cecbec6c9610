"""Exact int8 GEMM products of the fixed-point layers, with limb recombination.

Every product is an exact int8 x int8 -> int32 GEMM on the codes
(:func:`apt_core.kernels.matmul.int8_mm`: ``torch._int_mm`` or float32-carried, whichever
is faster on the CPU; the reduction is split past ``K * 2**14 >= 2**31``). Results leave
as float32 holding the exact integer (one rounding when it exceeds 2**24), to be rescaled
by a power of two by the caller.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from apt_core.kernels.compiled import quantize_int8
from apt_core.kernels.matmul import int8_mm, int8_mm_float
from apt_core.kernels.storage import LIMB_OFFSET
from apt_core.quant import MAX_EXPONENT, choose_exponent, code_range


def quantize_codes(x: Tensor, bits: int) -> tuple[Tensor, int] | None:
    """int8 codes and exponent of ``x`` on its per-tensor dynamic fixed-point grid.

    The grid and rounding are those of :func:`apt_core.quant.fake_quantize_dynamic`
    (exponent from max|x|, round half to even). Returns None when max|x| is not finite.
    """
    if x.numel() == 0:
        return x.to(torch.int8), bits - 1
    lo_v, hi_v = torch.aminmax(x.detach())
    amax = max(-float(lo_v), float(hi_v))
    if not math.isfinite(amax):
        return None
    f = min(choose_exponent(amax, bits), MAX_EXPONENT) if amax > 0 else bits - 1
    lo, hi = code_range(bits)
    return quantize_int8(x.detach(), torch.tensor([2.0**f, lo, hi])), f


def combine(hi: Tensor, lo: Tensor, offset_sum: Tensor) -> Tensor:
    """float32 ``256 * hi + lo + 128 * offset_sum`` (limb products and the offset term).

    ``lo + 128 * offset_sum`` is formed in integers (exact below 2**31), so the float
    result is exact while the parts stay below 2**24 and otherwise rounded once or twice.
    """
    low = lo.to(torch.int64) if lo.dtype == torch.int64 else lo
    low = low + offset_sum * LIMB_OFFSET
    return torch.add(low.to(torch.float32), hi.to(torch.float32), alpha=256.0)


def row_sums(a: Tensor) -> Tensor:
    """Exact int32 sums of the rows of an int8 matrix."""
    return a.sum(1, dtype=torch.int32)


def linear_forward(xq: Tensor, w: Tensor, limbs: bool) -> Tensor:
    """float32 integer values of ``xq @ W.T`` for stored weight ``w`` (int8 or limbs)."""
    if not limbs:
        return int8_mm_float(xq, w.t())
    acc = int8_mm(xq, w.t())
    n = w.shape[0] // 2
    return combine(acc[:, :n], acc[:, n:], row_sums(xq).unsqueeze(1))


def linear_input_grad(gq: Tensor, w: Tensor, limbs: bool) -> Tensor:
    """float32 integer values of ``gq @ W`` for stored weight ``w`` (int8 or limbs)."""
    if not limbs:
        return int8_mm_float(gq, w)
    hi, lo = w.chunk(2)
    return combine(int8_mm(gq, hi), int8_mm(gq, lo), row_sums(gq).unsqueeze(1))
