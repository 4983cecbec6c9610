"""Fused per-tensor passes of the master-copy-free SGD update (compiled when possible).

``one_pass`` reads codes, gradient and momentum once, writes the new codes on the current
grid and the int8 momentum at the last step's exponent, and returns the reductions
(statistics and maxima) that decide whether those guesses hold; ``write_pass`` is the
exact second pass for when they do not (an overflow shift, a skipped layer, a larger
momentum move). The float arithmetic is the reference optimizer's, op for op, so nearest
rounding is bit-exact with it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from apt_core.kernels import native, native_update
from apt_core.kernels.compiled import COMPILE_MIN_NUMEL, Compiled
from apt_core.kernels.noise import hash_uniform, round_stochastic
from apt_core.kernels.storage import LIMB_OFFSET

# scalar slots of the float parameter vector ``p`` passed to both passes (one tensor, so
# changing values never recompiles)
G_SCALE, W_SCALE, LR, MOM, WD, M_SCALE, HALF, F_SCALE, LO, HI, E_SCALE, SKIP = range(12)
N_SCALARS = 12


def _codes(stored: Tensor, limbs: bool) -> Tensor:
    if limbs:
        hi, lo = stored[0], stored[1]
        return hi.to(torch.int32) * 256 + (lo.to(torch.int32) + LIMB_OFFSET)
    return stored.to(torch.int32)


def _direction(
    stored: Tensor, g: Tensor, mom: Tensor, p: Tensor, limbs: bool, has_prev: bool, has_wd: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """(old codes, w, d, prev): the reference's d = mu * prev + (g + wd * w)."""
    c = _codes(stored, limbs)
    w = c.to(torch.float32) * p[W_SCALE]
    d = g.to(torch.float32) * p[G_SCALE]
    if has_wd:
        d = d + w * p[WD]  # two roundings, as the reference (not an FMA)
    prev = None
    if has_prev:
        prev = mom.to(torch.float32) * p[M_SCALE]
        d = prev * p[MOM] + d
    return c, w, d, prev


def write_pass(
    stored: Tensor,
    g: Tensor,
    mom: Tensor,
    p: Tensor,
    keys: Tensor,
    base: Tensor,
    limbs: bool,
    has_prev: bool,
    has_wd: bool,
    stochastic: bool,
    keep_momentum: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """New stored codes, new int8 momentum and #(changed codes) of one tensor.

    ``keys`` holds the int32 noise keys ``[w1, w2, m1, m2]``; ``base`` (int32) the offset
    of this tensor's first element in the optimizer's flat element numbering.
    """
    c, w, d, prev = _direction(stored, g, mom, p, limbs, has_prev, has_wd)
    skip = p[SKIP] > 0
    u = torch.where(skip, torch.zeros_like(d), d * p[LR])
    if prev is not None:
        d = torch.where(skip, prev, d)
    else:
        d = torch.where(skip, torch.zeros_like(d), d)
    x = (w - u) * p[F_SCALE]
    idx = torch.arange(c.numel(), dtype=torch.int32) + base
    if stochastic:
        r = round_stochastic(x, hash_uniform(idx, keys[0], keys[1]))
    else:
        r = torch.round(x)
    code = torch.maximum(torch.minimum(r, p[HI]), p[LO]).to(torch.int32)
    code = torch.where(skip, c, code)
    changed = (code != c).sum()
    if limbs:
        new = torch.stack(((code >> 8).to(torch.int8), ((code & 255) - LIMB_OFFSET).to(torch.int8)))
    else:
        new = code.to(torch.int8)
    if keep_momentum:
        q = round_stochastic(d * p[E_SCALE], hash_uniform(idx, keys[2], keys[3]))
        m = q.clamp(-127, 127).to(torch.int8)
    else:
        m = torch.zeros(0, dtype=torch.int8)
    return new, m, changed


def one_pass(
    stored: Tensor,
    g: Tensor,
    mom: Tensor,
    p: Tensor,
    keys: Tensor,
    base: Tensor,
    limbs: bool,
    has_prev: bool,
    has_wd: bool,
    stochastic: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Update codes and momentum in one read of the tensors, on guessed decisions.

    The grid ``p[F_SCALE]`` is kept and the momentum is rounded at the exponent of the last step
    (scale ``p[E_SCALE]``); the reductions tell the caller whether the guesses held.

    Returns
    -------
    tuple[Tensor, Tensor, Tensor, Tensor]
        New stored codes, new int8 momentum, the float64
        reductions ``[sum|u|, max|w - u|, max|d|, max|prev|]`` and int64
        ``[#(u != 0), #(|u| >= delta/2), #(changed codes)]``. The caller keeps them when
        the guesses were right.
    """
    c, w, d, prev = _direction(stored, g, mom, p, limbs, has_prev, has_wd)
    u = d * p[LR]
    au = u.abs()
    w_new = w - u
    x = w_new * p[F_SCALE]
    idx = torch.arange(c.numel(), dtype=torch.int32) + base
    r = round_stochastic(x, hash_uniform(idx, keys[0], keys[1])) if stochastic else torch.round(x)
    code = torch.maximum(torch.minimum(r, p[HI]), p[LO]).to(torch.int32)
    noise = hash_uniform(idx, keys[2], keys[3])
    mom_new = round_stochastic(d * p[E_SCALE], noise).clamp(-127, 127).to(torch.int8)
    zero = torch.zeros((), dtype=torch.float32)
    amax_prev = prev.abs().amax() if prev is not None else zero
    floats = torch.stack(
        (
            au.to(torch.float64).sum(),
            w_new.abs().amax().to(torch.float64),
            d.abs().amax().to(torch.float64),
            amax_prev.to(torch.float64),
        )
    )
    counts = torch.stack(
        (
            (u != 0).sum(dtype=torch.int32),
            (au >= p[HALF]).sum(dtype=torch.int32),
            (code != c).sum(dtype=torch.int32),
        )
    )
    if limbs:
        new = torch.stack(((code >> 8).to(torch.int8), ((code & 255) - LIMB_OFFSET).to(torch.int8)))
    else:
        new = code.to(torch.int8)
    return new, mom_new, floats, counts


_compiled_one = Compiled(one_pass, COMPILE_MIN_NUMEL)
_compiled_write = Compiled(write_pass, COMPILE_MIN_NUMEL)


def run_one(*args: Any) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`one_pass` natively when the native kernels are built, else compiled/eager."""
    if native.lib() is not None:
        return native_update.one_pass(*args)
    return _compiled_one(*args)  # type: ignore[no-any-return]


def run_write(*args: Any) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`write_pass` natively when the native kernels are built, else compiled/eager."""
    if native.lib() is not None:
        return native_update.write_pass(*args)
    return _compiled_write(*args)  # type: ignore[no-any-return]
