"""The integer backend's APTSGD step: two fused passes per tensor, decisions in between.

Numerics are those of the reference step in :mod:`apt_core.optimizer` (same float ops in
the same order, same counter-based noise); only the execution differs: no flat float
copies of every weight, gradient and momentum, no segment bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from apt_core.kernels import update as K
from apt_core.kernels.noise import as_int32, stream_keys
from apt_core.kernels.storage import uses_limbs
from apt_core.quant import MAX_EXPONENT, choose_exponent, code_range


@dataclass
class Slot:
    """One tensor (a layer's weight or bias) as the optimizer walks it."""

    name: str
    which: str
    layer: object
    size: int
    offset: int
    index: int


@dataclass
class _Seen:
    slot: Slot
    grad: tuple[Tensor, int]
    p: Tensor
    floats: list[float]
    counts: list[int]


def _view(stored: Tensor, limbs: bool) -> Tensor:
    return stored.view(2, -1) if limbs else stored.view(-1)


def _params(g_exp: int, f: int, lr: float, mom: float, wd: float, m_exp: int) -> Tensor:
    p = [0.0] * K.N_SCALARS
    p[K.G_SCALE], p[K.W_SCALE], p[K.LR], p[K.MOM] = 2.0**-g_exp, 2.0**-f, lr, mom
    p[K.WD], p[K.M_SCALE], p[K.HALF] = wd, 2.0**-m_exp, 2.0 ** -(f + 1)
    return torch.tensor(p, dtype=torch.float32)


def fused_step(opt: object, slots: list[Slot]) -> tuple[dict[str, tuple[int, int]],
                                                        dict[str, object], set[str]]:
    """Update every slot that has a gradient; see :meth:`APTSGD.step`.

    Returns ``(new (f_old, f_new) per weight, raw stats per layer, skipped layers)``.
    """
    o = opt  # APTSGD; typed loosely to avoid an import cycle
    seen: list[_Seen] = []
    mom_exp = o._mom_exp  # type: ignore[attr-defined]
    has_prev = o.momentum > 0 and o._mom is not None  # type: ignore[attr-defined]
    empty = torch.zeros(0, dtype=torch.int8)
    for s in slots:
        grad = s.layer.grad_of(s.which)  # type: ignore[attr-defined]
        if grad is None:
            continue
        layer, which = s.layer, s.which
        limbs = uses_limbs(layer.n_bits)  # type: ignore[attr-defined]
        m_exp = int(mom_exp[s.index]) if has_prev else 0
        p = _params(grad[1], layer.exponent(which), o.lr, o.momentum,  # type: ignore
                    o.weight_decay, m_exp)  # type: ignore[attr-defined]
        mom = o._mom[s.offset: s.offset + s.size] if has_prev else empty  # type: ignore
        fl, ct = K.run_stats(_view(layer.stored(which), limbs),  # type: ignore[attr-defined]
                             grad[0].reshape(-1), mom, p, limbs, has_prev,
                             bool(o.weight_decay))  # type: ignore[attr-defined]
        seen.append(_Seen(s, grad, p, fl.tolist(), ct.tolist()))
    bad = {v.slot.name for v in seen if not all(map(_finite, v.floats[:1]))}
    return _write(o, seen, bad, has_prev)


def _finite(v: float) -> bool:
    return v == v and abs(v) != float("inf")


def _write(o: object, seen: list[_Seen], bad: set[str], has_prev: bool
           ) -> tuple[dict[str, tuple[int, int]], dict[str, object], set[str]]:
    step = o._t  # type: ignore[attr-defined]
    w1, w2 = stream_keys(o.seed, step, 0)  # type: ignore[attr-defined]
    m1, m2 = stream_keys(o.seed, step, 1)  # type: ignore[attr-defined]
    keys = torch.tensor([as_int32(k) for k in (w1, w2, m1, m2)], dtype=torch.int32)
    keep = o.momentum > 0  # type: ignore[attr-defined]
    if keep and o._mom is None:  # type: ignore[attr-defined]
        o._mom = torch.zeros(sum(o._sizes), dtype=torch.int8)  # type: ignore[attr-defined]
        o._mom_exp = torch.full((len(o._sizes),), 7, dtype=torch.int32)  # type: ignore
    stats: dict[str, object] = {}
    exps: dict[str, tuple[int, int]] = {}
    for v in seen:
        s, layer = v.slot, v.slot.layer
        b, f = layer.n_bits, layer.exponent(s.which)  # type: ignore[attr-defined]
        skip = s.name in bad
        f_new, shifts = (f, 0) if skip else _fit(v.floats[1], b, f)
        amax_m = v.floats[3] if skip else v.floats[2]
        e = min(choose_exponent(amax_m, 8), MAX_EXPONENT)
        lo, hi = code_range(b)
        p = v.p.clone()
        p[K.F_SCALE], p[K.LO], p[K.HI] = 2.0**f_new, float(lo), float(hi)
        p[K.E_SCALE], p[K.SKIP] = 2.0**e, 1.0 if skip else 0.0
        limbs = uses_limbs(b)
        stored = layer.stored(s.which)  # type: ignore[attr-defined]
        prev = (o._mom[s.offset: s.offset + s.size] if has_prev  # type: ignore[attr-defined]
                else torch.zeros(0, dtype=torch.int8))
        new, m, changed = K.run_write(_view(stored, limbs), v.grad[0].reshape(-1), prev, p,
                                      keys, torch.tensor(s.offset, dtype=torch.int32), limbs,
                                      has_prev, bool(o.weight_decay),  # type: ignore
                                      o.rounding == "stochastic", keep)  # type: ignore
        if keep:
            o._mom[s.offset: s.offset + s.size].copy_(m)  # type: ignore[attr-defined]
            o._mom_exp[s.index] = e  # type: ignore[attr-defined]
        if skip:
            continue
        layer.set_stored(s.which, new.view(stored.shape), f_new)  # type: ignore
        if s.which == "weight":
            exps[s.name] = (f, f_new)
            stats[s.name] = (v.floats[0], s.size, v.counts[0],
                             v.counts[1] if shifts else int(changed), shifts)
    return exps, stats, bad


def _fit(amax: float, bits: int, f: int) -> tuple[int, int]:
    _, hi = code_range(bits)
    shifts = 0
    while amax * 2.0**f > hi + 0.5 and shifts < 64:
        f -= 1
        shifts += 1
    return f, shifts
