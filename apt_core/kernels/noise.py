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
    # "lowbias32"-style finalizer with multipliers below 2**31, so int64 products of
    # 32-bit values never overflow
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK
    x = x ^ (x >> 15)
    x = (x * 0x2C1B3C6D) & _MASK
    return x ^ (x >> 16)


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


def hash_uniform(idx: Tensor, k1: Tensor | int, k2: Tensor | int) -> Tensor:
    """Uniform float32 values in [0, 1) on a 2**-24 grid, one per int64 index."""
    h = _mix(_mix((idx & _MASK) ^ k1) ^ k2)
    return (h >> 8).to(torch.float32) * (2.0**-24)


def round_stochastic(x: Tensor, noise: Tensor) -> Tensor:
    """Round to the lower or upper neighbour with probability given by the distance."""
    fl = torch.floor(x)
    # compare instead of floor(x + U): x + U rounds up for large x in float32
    return fl + (noise < x - fl).to(x.dtype)
