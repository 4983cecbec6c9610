"""GEMM-ready in-memory storage of integer codes: int8, or two int8 limbs above 8 bits.

A tensor of ``n`` output rows and ``k`` values per row is stored as an int8 matrix:
``(n, k)`` holding the codes when ``bits <= 8``; ``(2n, k)`` holding two limbs when
``9 <= bits <= 16``, the high limbs in rows ``[0, n)`` and the low limbs in ``[n, 2n)``,
with ``code = 256 * hi + (lo + 128)``. Both limbs sit along the output dimension so one
``_int_mm`` serves them both; the ``+128`` offset is folded in with a row sum of the
other operand.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Offset of the low limb (its unsigned byte minus this is stored as int8).
LIMB_OFFSET = 128


def uses_limbs(bits: int) -> bool:
    """True when ``bits`` needs two int8 limbs."""
    return bits > 8


def stored_rows(rows: int, bits: int) -> int:
    """Rows of the stored int8 matrix for a tensor of ``rows`` output rows."""
    return 2 * rows if uses_limbs(bits) else rows


def encode(codes: Tensor, bits: int) -> Tensor:
    """Store integer codes (any integer dtype, shape ``(n, ...)``) as an int8 matrix."""
    flat = codes.reshape(codes.shape[0] if codes.dim() else 1, -1)
    if not uses_limbs(bits):
        return flat.to(torch.int8)
    c = flat.to(torch.int32)
    hi = torch.bitwise_right_shift(c, 8)
    lo = torch.bitwise_and(c, 255) - LIMB_OFFSET
    return torch.cat((hi, lo)).to(torch.int8)


def decode(stored: Tensor, bits: int) -> Tensor:
    """Integer codes (int32, ``(n, k)``) of a stored int8 matrix."""
    if not uses_limbs(bits):
        return stored.to(torch.int32)
    hi, lo = stored.to(torch.int32).chunk(2)
    return hi * 256 + lo + LIMB_OFFSET


def decode_float(stored: Tensor, bits: int, exponent: int) -> Tensor:
    """Real values ``code * 2**-exponent`` of a stored matrix, flat float32, in a few ops.

    Equal bit for bit to ``dequantize(decode(stored, bits), exponent)``: codes stay below
    2**16, so with a power-of-two scale every product and partial sum is exact in float32
    (the one place they differ, a scale outside float32's range, makes both inf or 0).
    """
    scale = 2.0**-exponent
    if not uses_limbs(bits):
        return stored.reshape(-1).to(torch.float32).mul_(scale)
    hi, lo = stored.reshape(2, -1).to(torch.float32)
    return hi.mul_(256.0 * scale).add_(lo, alpha=scale).add_(LIMB_OFFSET * scale)
