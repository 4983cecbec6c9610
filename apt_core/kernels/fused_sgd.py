"""The integer backend's APTSGD step: two fused passes per tensor, decisions in between.

Numerics are those of the reference step in :mod:`apt_core.optimizer` (same float ops in
the same order, same counter-based noise); only the execution differs: no flat float
copies of every weight, gradient and momentum, no segment bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor

from apt_core.kernels import native, native_update
from apt_core.kernels import update as K
from apt_core.kernels.noise import as_int32, stream_keys
from apt_core.kernels.storage import uses_limbs
from apt_core.kernels.weight_grad import DeferredGrad
from apt_core.quant import MAX_EXPONENT, choose_exponent, code_range


@dataclass
class Slot:
    """One tensor (a layer's weight or bias) as the optimizer walks it."""

    name: str
    which: str
    layer: Any
    size: int
    offset: int
    index: int


@dataclass
class _Seen:
    slot: Slot
    grad: tuple[Tensor | DeferredGrad, int]
    p: Tensor
    floats: list[float]
    counts: list[int]


def _view(stored: Tensor, limbs: bool) -> Tensor:
    return stored.view(2, -1) if limbs else stored.view(-1)


def _rows(stored: Tensor, limbs: bool, r0: int, r1: int) -> Tensor:
    """Rows ``r0:r1`` of a stored matrix as the passes read it (a view, both limbs)."""
    if limbs:
        n = stored.shape[0] // 2
        return stored.view(2, n, -1)[:, r0:r1].view(2, -1)
    return stored[r0:r1].view(-1)


def _write_tensor(
    stored: Tensor,
    grad: Tensor | DeferredGrad,
    prev: Tensor,
    p: Tensor,
    keys: Tensor,
    offset: int,
    mom_out: Tensor | None,
    flags: tuple[bool, bool, bool, bool, bool],
) -> tuple[Tensor, int]:
    """Pass 2 over one tensor: its new stored matrix and #(changed codes).

    The new int8 momentum goes into ``mom_out`` (when kept); ``flags`` are the passes'
    ``(limbs, has_prev, has_wd, stochastic, keep_momentum)``.
    """
    limbs, has_prev = flags[0], flags[1]
    if not isinstance(grad, DeferredGrad):
        new, m, changed = K.run_write(
            _view(stored, limbs),
            grad.reshape(-1),
            prev,
            p,
            keys,
            torch.tensor(offset, dtype=torch.int32),
            *flags,
        )
        if mom_out is not None:
            mom_out.copy_(m)
        return new.view(stored.shape), int(changed)
    k = grad.shape[1]
    out = torch.empty_like(stored)
    total = torch.zeros((), dtype=torch.int64)
    for r0, r1, acc in grad.blocks():
        pm = prev[r0 * k : r1 * k] if has_prev else prev
        base = torch.tensor(offset + r0 * k, dtype=torch.int32)
        new, m, changed = K.run_write(
            _rows(stored, limbs, r0, r1), acc.view(-1), pm, p, keys, base, *flags
        )
        _rows(out, limbs, r0, r1).copy_(new)
        if mom_out is not None:
            mom_out[r0 * k : r1 * k].copy_(m)
        total += changed
    return out, int(total)


def _params(
    g_exp: int,
    f: int,
    lr: float,
    mom: float,
    wd: float,
    m_exp: int,
    guess: tuple[int, int, int] | None = None,
) -> Tensor:
    """The passes' scalars; ``guess`` = (bits, f, e) fills the one-pass grid and momentum."""
    p = [0.0] * K.N_SCALARS
    p[K.G_SCALE], p[K.W_SCALE], p[K.LR], p[K.MOM] = 2.0**-g_exp, 2.0**-f, lr, mom
    p[K.WD], p[K.M_SCALE], p[K.HALF] = wd, 2.0**-m_exp, 2.0 ** -(f + 1)
    if guess is not None:
        b, f_grid, e = guess
        lo, hi = code_range(b)
        p[K.F_SCALE], p[K.LO], p[K.HI] = 2.0**f_grid, float(lo), float(hi)
        p[K.E_SCALE] = 2.0**e
    return torch.tensor(p, dtype=torch.float32)


#: Per layer: (sum |u|, weights, weights with a non-zero update, codes changed, shifts).
RawStats = tuple[float, int, float, float, int]


def fused_step(
    opt: Any, slots: list[Slot]
) -> tuple[dict[str, tuple[int, int]], dict[str, RawStats], set[str]]:
    """Update every slot that has a gradient; see :meth:`APTSGD.step`.

    Each layer first runs one fused pass per tensor on guessed decisions (grid kept,
    momentum exponent of the last step, right ~85% of the time); when a guess was wrong
    (an overflow shift, a larger momentum move, a non-finite update) that layer is redone
    with the exact two-pass update. With the native kernels every layer whose gradients
    are whole tensors runs in one C call (:func:`native_update.step_slots`: the same passes and
    decisions, without ~0.1 ms of Python per tensor); deferred (row-block) gradients and the
    torch kernels take the per-layer loop below. Returns ``(new (f_old, f_new) per weight,
    raw stats per layer, skipped layers)``.
    """
    o: Any = opt  # APTSGD; typed loosely to avoid an import cycle
    has_prev = o.momentum > 0 and o._mom is not None
    if o.momentum > 0 and o._mom is None:
        o._mom = torch.zeros(sum(o._sizes), dtype=torch.int8)
        o._mom_exp = torch.full((len(o._sizes),), 7, dtype=torch.int32)
    keys = _keys(o)
    exps: dict[str, tuple[int, int]] = {}
    stats: dict[str, object] = {}
    bad: set[str] = set()
    groups: dict[str, list[Slot]] = {}
    for s in slots:
        groups.setdefault(s.name, []).append(s)
    batch: list[tuple[Slot, tuple[Tensor, int]]] = []
    for name, group in list(groups.items()):
        grads = [(s, s.layer.grad_of(s.which)) for s in group]
        if all(g is None or native_update.batchable(s, g[0]) for s, g in grads):
            batch += [(s, g) for s, g in grads if g is not None]
            del groups[name]
    if batch:
        native_update.step_slots(o, batch, has_prev, keys, exps, stats, bad)
    for name, group in groups.items():
        tries = [t for t in (_try(o, s, has_prev, keys) for s in group) if t is not None]
        if all(t.ok for t in tries):
            for t in tries:
                _commit(o, t, exps, stats)
            continue
        seen = [_Seen(t.slot, t.grad, t.p, t.floats, t.counts[:2]) for t in tries]
        skip = {name} if not all(_finite(t.floats[0]) for t in tries) else set()
        e2, s2, b2 = _write(o, seen, skip, has_prev)
        exps.update(e2)
        stats.update(s2)
        bad |= b2
    return exps, cast(dict[str, RawStats], stats), bad


@dataclass
class _Try:
    slot: Slot
    grad: tuple[Tensor | DeferredGrad, int]
    p: Tensor
    floats: list[float]
    counts: list[int]
    new: Tensor
    moms: Tensor
    e: int
    e_guess: int
    ok: bool


def _try(o: Any, s: Slot, has_prev: bool, keys: Tensor) -> _Try | None:
    """The one-pass update of one slot on guessed decisions (None: no gradient)."""
    layer, which = s.layer, s.which
    grad = layer.grad_of(which)
    if grad is None:
        return None
    b, f = layer.n_bits, layer.exponent(which)
    e_guess = int(o._mom_exp[s.index]) if o._mom_exp is not None else 7
    p = _params(
        grad[1],
        f,
        o.lr,
        o.momentum,
        o.weight_decay,
        e_guess if has_prev else 0,
        (b, f, e_guess),
    )
    mom = o._mom[s.offset : s.offset + s.size] if has_prev else torch.zeros(0, dtype=torch.int8)
    flags = (
        uses_limbs(b),
        has_prev,
        bool(o.weight_decay),
        o.rounding == "stochastic",
    )
    new, moms, floats, counts = _one(
        layer.stored(which),
        grad[0],
        mom,
        p,
        keys,
        s.offset,
        flags,
    )
    e = min(choose_exponent(floats[2], 8), MAX_EXPONENT) if _finite(floats[2]) else e_guess
    ok = _finite(floats[0]) and _fit(floats[1], b, f)[1] == 0 and (e == e_guess or not o.momentum)
    return _Try(s, grad, p, floats, counts, new, moms, e, e_guess, ok)


def _commit(o: Any, t: _Try, exps: dict[str, tuple[int, int]], stats: dict[str, object]) -> None:
    s, layer = t.slot, t.slot.layer
    f = layer.exponent(s.which)
    if o.momentum > 0:
        o._mom[s.offset : s.offset + s.size].copy_(t.moms)
        o._mom_exp[s.index] = t.e
    layer.set_stored(s.which, t.new, f)
    if s.which == "weight":
        exps[s.name] = (f, f)
        stats[s.name] = (t.floats[0], s.size, t.counts[0], t.counts[2], 0)


def _one(
    stored: Tensor,
    grad: Tensor | DeferredGrad,
    mom: Tensor,
    p: Tensor,
    keys: Tensor,
    offset: int,
    flags: tuple[bool, bool, bool, bool],
) -> tuple[Tensor, Tensor, list[float], list[int]]:
    """:func:`update.one_pass` over one tensor (block by block when deferred)."""
    limbs, has_prev = flags[0], flags[1]
    if not isinstance(grad, DeferredGrad):
        new, moms, fl, ct = K.run_one(
            _view(stored, limbs),
            grad.reshape(-1),
            mom,
            p,
            keys,
            torch.tensor(offset, dtype=torch.int32),
            *flags,
        )
        return new.view(stored.shape), moms, fl.tolist(), ct.tolist()
    k = grad.shape[1]
    out = torch.empty_like(stored)
    moms = torch.empty(grad.shape[0] * k, dtype=torch.int8)
    fls, cts = [], []
    direct = native.lib() is not None
    for r0, r1, acc in grad.blocks():
        m = mom[r0 * k : r1 * k] if has_prev else mom
        base = torch.tensor(offset + r0 * k, dtype=torch.int32)
        rows = (_rows(stored, limbs, r0, r1), acc.view(-1), m, p, keys, base, *flags)
        if direct:  # writes straight into the block's rows of the results
            _, _, fl, ct = native_update.one_pass(
                *rows, out=_rows(out, limbs, r0, r1), mom_out=moms[r0 * k : r1 * k]
            )
        else:
            new, mb, fl, ct = K.run_one(*rows)
            _rows(out, limbs, r0, r1).copy_(new)
            moms[r0 * k : r1 * k].copy_(mb)
        fls.append(fl)
        cts.append(ct)
    f = torch.stack(fls)
    return (
        out,
        moms,
        [float(f[:, 0].sum()), *f[:, 1:].amax(0).tolist()],
        torch.stack(cts).sum(0).tolist(),
    )


def _keys(o: Any) -> Tensor:
    step = o._t
    w1, w2 = stream_keys(o.seed, step, 0)
    m1, m2 = stream_keys(o.seed, step, 1)
    return torch.tensor([as_int32(k) for k in (w1, w2, m1, m2)], dtype=torch.int32)


def _finite(v: float) -> bool:
    return v == v and abs(v) != float("inf")


def _write(
    o: Any, seen: list[_Seen], bad: set[str], has_prev: bool
) -> tuple[dict[str, tuple[int, int]], dict[str, object], set[str]]:
    keys = _keys(o)
    keep = o.momentum > 0
    if keep and o._mom is None:
        o._mom = torch.zeros(sum(o._sizes), dtype=torch.int8)
        o._mom_exp = torch.full((len(o._sizes),), 7, dtype=torch.int32)
    stats: dict[str, object] = {}
    exps: dict[str, tuple[int, int]] = {}
    for v in seen:
        s, layer = v.slot, v.slot.layer
        b, f = layer.n_bits, layer.exponent(s.which)
        skip = s.name in bad
        f_new, shifts = (f, 0) if skip else _fit(v.floats[1], b, f)
        amax_m = v.floats[3] if skip else v.floats[2]
        e = min(choose_exponent(amax_m, 8), MAX_EXPONENT)
        lo, hi = code_range(b)
        p = v.p.clone()
        p[K.F_SCALE], p[K.LO], p[K.HI] = 2.0**f_new, float(lo), float(hi)
        p[K.E_SCALE], p[K.SKIP] = 2.0**e, 1.0 if skip else 0.0
        limbs = uses_limbs(b)
        stored = layer.stored(s.which)
        prev = (
            o._mom[s.offset : s.offset + s.size] if has_prev else torch.zeros(0, dtype=torch.int8)
        )
        flags = (
            limbs,
            has_prev,
            bool(o.weight_decay),
            o.rounding == "stochastic",
            keep,
        )
        mom_out = o._mom[s.offset : s.offset + s.size] if keep else None
        new, changed = _write_tensor(stored, v.grad[0], prev, p, keys, s.offset, mom_out, flags)
        if keep:
            o._mom_exp[s.index] = e
        if skip:
            continue
        layer.set_stored(s.which, new, f_new)
        if s.which == "weight":
            exps[s.name] = (f, f_new)
            stats[s.name] = (
                v.floats[0],
                s.size,
                v.counts[0],
                v.counts[1] if shifts else int(changed),
                shifts,
            )
    return exps, stats, bad


def _fit(amax: float, bits: int, f: int) -> tuple[int, int]:
    _, hi = code_range(bits)
    shifts = 0
    while amax * 2.0**f > hi + 0.5 and shifts < 64:
        f -= 1
        shifts += 1
    return f, shifts
