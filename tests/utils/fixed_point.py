"""Plain reference implementations of the fixed-point arithmetic under test."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def ref_exponent(max_abs: float, bits: int) -> int:
    """Largest f with ``max_abs * 2**f <= 2**(bits-1) - 1``, found by walking f.

    ``math.ldexp`` scales exactly and, unlike ``2.0**f``, never overflows on the way.
    """
    qmax = 2 ** (bits - 1) - 1
    f = 0
    while math.ldexp(max_abs, f) > qmax:
        f -= 1
    while math.ldexp(max_abs, f + 1) <= qmax:
        f += 1
    return f


def ref_quantize(x: Tensor, bits: int, exponent: int) -> Tensor:
    """Round-to-nearest-even codes of ``x`` on the ``bits``/``exponent`` grid (int64)."""
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return torch.round(x.double() * 2.0**exponent).clamp(lo, hi).to(torch.int64)


def ref_fake_quantize(x: Tensor, bits: int) -> Tensor:
    """Per-tensor power-of-two fake quantization, computed in float64."""
    amax = float(x.detach().abs().max())
    if amax == 0.0:
        return x.clone()
    f = ref_exponent(amax, bits)
    return (ref_quantize(x, bits, f).double() * 2.0**-f).to(x.dtype)
