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

from apt_core.kernels import native
from apt_core.kernels.compiled import quantize_int8, rescale, rescale_bias
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
    x = x.detach()
    fast = native.lib() is not None and x.dtype == torch.float32 and native.dense(x)
    if fast:
        amax = native.amax(x)
    else:
        lo_v, hi_v = torch.aminmax(x)
        amax = max(-float(lo_v), float(hi_v))
    if not math.isfinite(amax):
        return None
    f = min(choose_exponent(amax, bits), MAX_EXPONENT) if amax > 0 else bits - 1
    lo, hi = code_range(bits)
    if fast:
        return native.quantize(x, 2.0**f, lo, hi), f
    return quantize_int8(x, torch.tensor([2.0**f, lo, hi])), f


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


def rescale_float(acc: Tensor, scale: float | None, bias: Tensor | None) -> Tensor:
    """The torch kernels' ``acc * scale (+ bias)`` of a float32 product (None: unscaled).

    ``bias`` must already broadcast over ``acc``.
    """
    if scale is None:
        return acc
    if bias is None:
        return rescale(acc, torch.tensor(scale))  # type: ignore[no-any-return]
    return rescale_bias(acc, torch.tensor(scale), bias)  # type: ignore[no-any-return]


def _native_ok(acc: Tensor, bias: Tensor | None) -> bool:
    return (
        native.lib() is not None
        and acc.dtype == torch.int32
        and (bias is None or (bias.dtype == torch.float32 and bias.is_contiguous()))
    )


def linear_forward(
    xq: Tensor, w: Tensor, limbs: bool, scale: float | None = None, bias: Tensor | None = None
) -> Tensor:
    """float32 ``(xq @ W.T) * scale + bias`` for stored weight ``w`` (int8 or limbs).

    Without ``scale`` the exact integer values are returned unscaled (and ``bias`` is
    ignored). The native kernels convert, rescale and add the bias in one pass over the
    int32 accumulator; the torch ones in separate passes with the same roundings.
    """
    if scale is None:
        bias = None
    if not limbs:
        if native.lib() is None:
            return rescale_float(int8_mm_float(xq, w.t()), scale, bias)
        acc = int8_mm(xq, w.t())
        if _native_ok(acc, bias):
            return native.rescale(acc, 1.0 if scale is None else scale, bias)
        return rescale_float(acc.to(torch.float32), scale, bias)
    acc = int8_mm(xq, w.t())
    n = w.shape[0] // 2
    if _native_ok(acc, bias):
        s = 1.0 if scale is None else scale
        return native.combine(acc[:, :n], acc[:, n:], row_sums(xq), s, bias)
    return rescale_float(combine(acc[:, :n], acc[:, n:], row_sums(xq).unsqueeze(1)), scale, bias)


def linear_input_grad(gq: Tensor, w: Tensor, limbs: bool, scale: float | None = None) -> Tensor:
    """float32 ``(gq @ W) * scale`` for stored weight ``w`` (int8 or limbs); see above."""
    if not limbs:
        if native.lib() is None:
            return rescale_float(int8_mm_float(gq, w), scale, None)
        acc = int8_mm(gq, w)
        if _native_ok(acc, None):
            return native.rescale(acc, 1.0 if scale is None else scale)
        return rescale_float(acc.to(torch.float32), scale, None)
    hi, lo = w.chunk(2)
    acc_hi, acc_lo = int8_mm(gq, hi), int8_mm(gq, lo)
    if _native_ok(acc_hi, None) and _native_ok(acc_lo, None):
        return native.combine(acc_hi, acc_lo, row_sums(gq), 1.0 if scale is None else scale)
    return rescale_float(combine(acc_hi, acc_lo, row_sums(gq).unsqueeze(1)), scale, None)
