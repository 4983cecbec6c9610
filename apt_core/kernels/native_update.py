"""Native optimizer passes: ctypes wrappers of ``c_update.py`` and ``c_step.py``.

:func:`one_pass` and :func:`write_pass` are :mod:`apt_core.kernels.update`'s passes over one
tensor; :func:`step` runs a whole optimizer step (every layer's passes and decisions) in
one call, and :func:`step_slots` lays an optimizer's slots out for it. Callers check
:func:`apt_core.kernels.native.lib` first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from apt_core.kernels.native import _ptr, lib
from apt_core.kernels.storage import uses_limbs
from apt_core.kernels.weight_grad import DeferredGrad

if TYPE_CHECKING:
    from apt_core.kernels.fused_sgd import Slot


def _limbs(stored: Tensor, limbs: bool) -> tuple[Tensor, Tensor | None]:
    if not limbs:
        return stored.contiguous(), None
    return stored[0].contiguous(), stored[1].contiguous()


def _grad(g: Tensor) -> tuple[Tensor, int]:
    if g.dtype == torch.int32:
        return g.contiguous(), 0
    return g.to(torch.float32).contiguous(), 1


def _codes_out(n: int, limbs: bool) -> Tensor:
    return torch.empty((2, n) if limbs else (n,), dtype=torch.int8)


def _pass_args(
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
    new: Tensor,
) -> tuple[tuple[object, ...], tuple[Tensor | None, ...]]:
    """The arguments both C passes share (their ``_PASS`` prefix), and the tensors behind them.

    The inputs are made contiguous, which may copy them: the caller keeps the second tuple
    alive until the C call returns, or the pointers would outlive their memory.
    """
    hi, lo = _limbs(stored, limbs)
    gc, g_float = _grad(g)
    prev = mom.contiguous() if has_prev else None
    args = (
        _ptr(hi), _ptr(lo), _ptr(gc), g_float, _ptr(prev), p.data_ptr(), keys.data_ptr(),
        int(base), g.numel(), int(has_wd), int(stochastic),
        _ptr(new[0] if limbs else new), _ptr(new[1]) if limbs else None,
    )  # fmt: skip
    return args, (hi, lo, gc, prev)


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
    out: Tensor | None = None,
    mom_out: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`apt_core.kernels.update.one_pass` in one native loop (same arguments).

    ``out`` (shaped like ``stored``, each limb row contiguous) and ``mom_out`` (contiguous)
    receive the new codes and momentum in place of fresh tensors.
    """
    n = g.numel()
    new = _codes_out(n, limbs) if out is None else out
    mom_new = torch.empty(n, dtype=torch.int8) if mom_out is None else mom_out
    floats = torch.empty(4, dtype=torch.float64)
    counts = torch.empty(3, dtype=torch.int64)
    args, _alive = _pass_args(
        stored, g, mom, p, keys, base, limbs, has_prev, has_wd, stochastic, new
    )
    lib().aptk_one_pass(*args, _ptr(mom_new), floats.data_ptr(), counts.data_ptr())  # type: ignore[union-attr]
    return new, mom_new, floats, counts


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
    """:func:`apt_core.kernels.update.write_pass` in one native loop (same arguments)."""
    n = g.numel()
    new = _codes_out(n, limbs)
    m = torch.empty(n if keep_momentum else 0, dtype=torch.int8)
    args, _alive = _pass_args(
        stored, g, mom, p, keys, base, limbs, has_prev, has_wd, stochastic, new
    )
    changed = lib().aptk_write_pass(*args, _ptr(m) if keep_momentum else None)  # type: ignore[union-attr]
    return new, m, torch.tensor(changed, dtype=torch.int64)


#: Columns of :func:`step`'s per-slot tables (``c_step.SOURCE``'s SP_*, SI_* and SR_*).
STEP_PTRS, STEP_INTS, STEP_RES = 5, 8, 5


def step(
    ptrs: Tensor,
    ints: Tensor,
    hyper: tuple[float, float, float],
    has_prev: bool,
    stochastic: bool,
    keys: Tensor,
    mom: Tensor | None,
    mom_exp: Tensor | None,
) -> tuple[list[list[float]], list[list[int]], list[list[int]]]:
    """One optimizer step over many tensors in one native call (``aptk_step``).

    ``ptrs`` (n, :data:`STEP_PTRS`) and ``ints`` (n, :data:`STEP_INTS`) describe the slots,
    each layer's adjacent; ``hyper`` is (lr, momentum, weight decay). The momentum
    ``mom`` and its exponents ``mom_exp`` are updated in place. Returns per slot the one
    pass's floats and counts and the decisions (see ``aptk_step``).
    """
    n = ptrs.shape[0]
    floats = torch.empty((n, 4), dtype=torch.float64)
    counts = torch.empty((n, 3), dtype=torch.int64)
    res = torch.empty((n, STEP_RES), dtype=torch.int64)
    code = lib().aptk_step(  # type: ignore[union-attr]
        n, ptrs.data_ptr(), ints.data_ptr(), *hyper, int(has_prev), int(stochastic),
        keys.data_ptr(), _ptr(mom), _ptr(mom_exp), floats.data_ptr(), counts.data_ptr(),
        res.data_ptr(),
    )  # fmt: skip
    if code != 0:
        raise MemoryError("aptk_step: no scratch memory for the step's momentum")
    return floats.tolist(), counts.tolist(), res.tolist()


def batchable(s: Slot, g: Tensor | DeferredGrad) -> bool:
    """True when the slot can join the one native call of :func:`step_slots`."""
    return (
        lib() is not None
        and isinstance(g, Tensor)
        and g.dtype in (torch.int32, torch.float32)
        and s.layer.stored(s.which).is_contiguous()
    )


def step_slots(
    o: Any,
    batch: list[tuple[Slot, tuple[Tensor, int]]],
    has_prev: bool,
    keys: Tensor,
    exps: dict[str, tuple[int, int]],
    stats: dict[str, object],
    bad: set[str],
) -> None:
    """What the per-layer loop of :func:`fused_step` does, for ``batch``, in one native call.

    The same passes and decisions run in C (``aptk_step``); Python only lays out the slots
    and adopts the new codes.
    """
    ptrs: list[int] = []
    ints: list[int] = []
    alive: list[Tensor] = []  # the contiguous gradients, alive until the call returns
    news: list[Tensor] = []
    f_old: list[int] = []
    layer_ids: dict[str, int] = {}
    for s, (g, g_exp) in batch:
        layer = s.layer
        stored, bits, f = layer.stored(s.which), layer.n_bits, layer.exponent(s.which)
        limbs = uses_limbs(bits)
        flat = g.reshape(-1).contiguous()
        new = torch.empty_like(stored)
        sp, op = stored.data_ptr(), new.data_ptr()
        ptrs += (sp, sp + s.size if limbs else 0, flat.data_ptr(), op, op + s.size if limbs else 0)
        lid = layer_ids.setdefault(s.name, len(layer_ids))
        ints += (s.size, s.offset, lid, bits, f, g_exp, int(flat.dtype != torch.int32), s.index)
        alive.append(flat)
        news.append(new)
        f_old.append(f)
    keep = o.momentum > 0
    floats, counts, res = step(
        torch.tensor(ptrs, dtype=torch.int64).view(-1, STEP_PTRS),
        torch.tensor(ints, dtype=torch.int64).view(-1, STEP_INTS),
        (o.lr, o.momentum, o.weight_decay),
        has_prev,
        o.rounding == "stochastic",
        keys,
        o._mom if keep else None,
        o._mom_exp if keep else None,
    )
    del alive
    for i, (s, _) in enumerate(batch):
        f_new, _e, shifts, changed, skip = res[i]
        if skip:
            bad.add(s.name)
            continue
        s.layer.set_stored(s.which, news[i], f_new)
        if s.which == "weight":
            exps[s.name] = (f_old[i], f_new)
            stats[s.name] = (floats[i][0], s.size, counts[i][0], changed, shifts)
