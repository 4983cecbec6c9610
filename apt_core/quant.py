"""Fixed-point primitives: stateless tensor functions and one straight-through autograd op.

A b-bit signed fixed-point number with exponent f has value ``q * 2**-f`` where the
integer code ``q`` lies in ``[-2**(b-1), 2**(b-1) - 1]``; the quantization step is
``delta = 2**-f``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def code_range(bits: int) -> tuple[int, int]:
    """Smallest and largest signed code of a ``bits``-wide word."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def choose_exponent(max_abs: float, bits: int) -> int:
    """Largest exponent f whose grid still holds ``max_abs`` without saturating.

    Parameters
    ----------
    max_abs : float
        Largest magnitude that must be representable.
    bits : int
        Word width.

    Returns
    -------
    int
        ``f`` such that ``max_abs <= (2**(bits-1) - 1) * 2**-f`` (``bits - 1`` for zero input).
    """
    if not math.isfinite(max_abs) or max_abs <= 0.0:
        return bits - 1
    qmax = (1 << (bits - 1)) - 1
    # difference of logs: qmax / max_abs overflows for subnormal max_abs
    f = math.floor(math.log2(qmax) - math.log2(max_abs))
    # guard against log2 rounding at exact powers of two, in both directions
    while math.ldexp(max_abs, f) > qmax:
        f -= 1
    while math.ldexp(max_abs, f + 1) <= qmax:
        f += 1
    return int(f)


#: Largest exponent used on float32 tensors: 2**f must stay finite in float32, and values
#: below 2**-MAX_EXPONENT are zero for every practical purpose.
MAX_EXPONENT = 120


def grid_exponent(max_abs: float, bits: int) -> int:
    """:func:`choose_exponent`, capped at :data:`MAX_EXPONENT` (the exponent of a new grid).

    Without the cap, tiny weights (max |w| below ``2**-113`` at 8 bits) would get a grid
    whose scale ``2**f`` is infinite in float32, and every code would saturate.
    """
    return min(choose_exponent(max_abs, bits), MAX_EXPONENT)


def cap_exponent(codes: Tensor, bits: int, exponent: int) -> tuple[Tensor, int]:
    """The same values on a grid of exponent at most :data:`MAX_EXPONENT`.

    Codes above the cap are rounded to nearest onto the coarser grid (values below
    ``2**-(MAX_EXPONENT + 1)`` become zero); codes at or below it are returned as they are.
    """
    if exponent <= MAX_EXPONENT:
        return codes, exponent
    return quantize(codes.double(), bits, MAX_EXPONENT - exponent), MAX_EXPONENT


def stochastic_round(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Round to an adjacent integer with probability given by the distance (unbiased)."""
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    # floor(x + U) is biased in float32 (x + U rounds up for large x); compare instead
    fl = torch.floor(x)
    return fl + (noise < x - fl).to(x.dtype)


def quantize(
    x: Tensor,
    bits: int,
    exponent: int,
    rounding: str = "nearest",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Integer codes (int32) of ``x`` on the ``bits``/``exponent`` grid, saturated.

    ``exponent`` is used as given; callers keep it at most :data:`MAX_EXPONENT` for float32
    (:func:`grid_exponent`).

    Parameters
    ----------
    x : Tensor
        Real values.
    bits : int
        Word width.
    exponent : int
        Fractional length f; the step is ``2**-f``.
    rounding : str (default: "nearest")
        "nearest" (ties to even, as torch.round) or "stochastic".
    generator : torch.Generator | None (default: None)
        Random source for stochastic rounding.
    """
    scaled = x * (2.0**exponent)
    if rounding == "nearest":
        r = torch.round(scaled)
    elif rounding == "stochastic":
        r = stochastic_round(scaled, generator)
    else:
        raise ValueError(f"rounding={rounding!r} is not one of ('nearest', 'stochastic').")
    lo, hi = code_range(bits)
    return r.clamp_(lo, hi).to(torch.int32)


def dequantize(codes: Tensor, exponent: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Real values ``codes * 2**-exponent``."""
    return codes.to(dtype) * (2.0**-exponent)


def fake_quantize_dynamic(x: Tensor, bits: int) -> Tensor:
    """Round ``x`` onto a per-tensor dynamic fixed-point grid (power-of-two step) and back.

    The exponent is chosen from ``max|x|`` so nothing saturates; rounding is to nearest.
    (Plain ops: torch's fused fake-quantize kernel measured slower on this CPU.)
    """
    amax = float(x.detach().abs().amax()) if x.numel() else 0.0
    if not math.isfinite(amax) or amax <= 0:
        return x
    f = grid_exponent(amax, bits)
    lo, hi = code_range(bits)
    return torch.round(x * 2.0**f).clamp_(lo, hi).mul_(2.0**-f)


class FixedPointSTE(torch.autograd.Function):
    """Quantize a tensor in the forward pass and/or its gradient in the backward pass.

    ``fwd_bits`` > 0 quantizes the value (activations); the gradient passes straight
    through (STE). ``bwd_bits`` > 0 leaves the value alone and quantizes the incoming
    gradient (the error of the layer output). Either side can be 0 to disable it.
    """

    @staticmethod
    def forward(ctx, x: Tensor, fwd_bits: int, bwd_bits: int) -> Tensor:  # type: ignore[override]
        """``x`` on its dynamic ``fwd_bits`` grid (unchanged when 0)."""
        ctx.bwd_bits = bwd_bits
        if fwd_bits > 0:
            return fake_quantize_dynamic(x, fwd_bits)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        """``grad`` on its dynamic ``bwd_bits`` grid (straight through when 0)."""
        if ctx.bwd_bits > 0:
            grad = fake_quantize_dynamic(grad, ctx.bwd_bits)
        return grad, None, None


def quantize_activation(x: Tensor, bits: int) -> Tensor:
    """Per-tensor dynamic fixed point on the value, straight-through gradient."""
    if bits <= 0:
        return x
    return FixedPointSTE.apply(x, bits, 0)  # type: ignore[no-any-return]


def quantize_error(y: Tensor, bits: int) -> Tensor:
    """Identity on the value; the gradient flowing back into ``y`` is quantized."""
    if bits <= 0 or not y.requires_grad:
        return y
    return FixedPointSTE.apply(y, 0, bits)  # type: ignore[no-any-return]
