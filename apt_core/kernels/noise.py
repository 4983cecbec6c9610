"""Counter-based uniform noise for stochastic rounding: a hash of (key, element index).

The same integer arithmetic runs eagerly (reference optimizer) and inside the fused
update kernels, so both draw bit-identical noise for a given seed, step and element,
without a generator state and without materializing a random tensor.
"""

from __future__ import annotations

import torch
from torch import Tensor

_MASK = 0xFFFFFFFF


def _mix(x: Tensor) -> Tensor:
    # "lowbias32"-style finalizer on int32 lanes: products wrap modulo 2**32 and each
    # arithmetic right shift is masked into a logical one, so the bits are those of the
    # uint32 hash (int32 lanes vectorize ~10x faster than int64 ones here)
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * 0x7FEB352D
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * 0x2C1B3C6D
    return x ^ ((x >> 16) & 0xFFFF)


def _mix_int(x: int) -> int:
    x &= _MASK
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _MASK
    x ^= x >> 15
    x = (x * 0x2C1B3C6D) & _MASK
    return x ^ (x >> 16)


def stream_keys(seed: int, step: int, stream: int) -> tuple[int, int]:
    """Two 32-bit keys naming one noise stream (seed, optimizer step, purpose)."""
    k1 = _mix_int(_mix_int(seed) ^ (step * 0x9E3779B1))
    k2 = _mix_int(k1 ^ _mix_int(stream + 0x632BE5AB))
    return k1, k2


def as_int32(key: int) -> int:
    """The int32 with the same 32 bits as the unsigned ``key``."""
    key &= _MASK
    return key - (1 << 32) if key >= 1 << 31 else key


def hash_uniform(idx: Tensor, k1: Tensor | int, k2: Tensor | int) -> Tensor:
    """Uniform float32 values in [0, 1) on a 2**-24 grid, one per index below 2**31.

    ``idx`` may be int32 or int64; integer keys are taken modulo 2**32, tensor keys must
    already be int32 (see :func:`as_int32`).
    """
    if isinstance(k1, int):
        k1 = as_int32(k1)
    if isinstance(k2, int):
        k2 = as_int32(k2)
    h = _mix(_mix(idx.to(torch.int32) ^ k1) ^ k2)
    return ((h >> 8) & 0xFFFFFF).to(torch.float32) * (2.0**-24)


def round_stochastic(x: Tensor, noise: Tensor) -> Tensor:
    """Round to the lower or upper neighbour with probability given by the distance."""
    fl = torch.floor(x)
    # compare instead of floor(x + U): x + U rounds up for large x in float32
    return fl + (noise < x - fl).to(x.dtype)
