"""SGD without a master copy: the only code that writes an APT layer's integer codes."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from apt_core.conversion import apt_layers
from apt_core.kernels.backend import get_backend, log_once
from apt_core.kernels.fused_sgd import Slot, fused_step
from apt_core.kernels.noise import hash_uniform, round_stochastic, stream_keys
from apt_core.layers import APTLayer
from apt_core.quant import MAX_EXPONENT, choose_exponent, code_range

log = logging.getLogger(__name__)

MOMENTUM_FORMATS = ("int8", "bf16", "fp32")


@dataclass(frozen=True)
class LayerStepStats:
    """What one optimizer step saw in one layer (weights only; the bias rides along).

    ``gavg`` is mean |update| divided by the quantization step before the update;
    ``underflow`` the share of weights with a non-zero update whose code did not change.
    """

    gavg: float
    underflow: float
    skipped: bool = False
    overflow_shifts: int = 0


class APTSGD:
    """SGD (optional momentum and weight decay) that writes Q(w - u) straight into codes.

    On the integer backend (default) every tensor is updated by two fused passes
    (:mod:`apt_core.kernels.fused_sgd`); the reference backend updates all layers as one
    flat float vector with segment reductions. Both compute the same float ops in the
    same order and draw the same counter-based noise for stochastic rounding (a hash of
    seed, step and element index), so they agree bit for bit.

    Parameters
    ----------
    model : nn.Module
        A model converted with ``to_apt``. Parameters outside APT layers (if any) are
        trained in float by a plain ``torch.optim.SGD`` with the same settings.
    lr : float
        Learning rate (the trainer may change ``self.lr`` between steps).
    momentum : float (default: 0.9)
    weight_decay : float (default: 0.0)
    rounding : str (default: "nearest")
        Rounding of the updated weight onto its grid: "nearest" or "stochastic".
    momentum_format : str (default: "int8")
        Storage of the momentum between steps: "int8" (dynamic fixed point with one
        exponent per tensor, stochastic rounding), "bf16" or "fp32".
    seed : int (default: 0)
        Seed of the stochastic rounding noise.
    backend : str | None (default: None -> the process-wide backend)
        "int" or "reference" (see :func:`apt_core.kernels.set_backend`).
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        rounding: str = "nearest",
        momentum_format: str = "int8",
        seed: int = 0,
        backend: str | None = None,
    ) -> None:
        if not lr > 0:
            raise ValueError(f"lr={lr!r} must be > 0.")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum={momentum!r} must be in [0, 1).")
        if momentum_format not in MOMENTUM_FORMATS:
            raise ValueError(
                f"momentum_format={momentum_format!r} is not one of {MOMENTUM_FORMATS}."
            )
        if rounding not in ("nearest", "stochastic"):
            raise ValueError(f"rounding={rounding!r} is not one of ('nearest', 'stochastic').")
        self.layers = apt_layers(model)
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.rounding = rounding
        self.momentum_format = momentum_format
        self.seed = seed
        self.backend = backend
        self._t = 0  # steps taken: names the noise stream of each step
        # (layer, tensor) slots in flat order, with their sizes
        self._slots = [(n, w) for n, m in self.layers.items() for w in m.tensors()]
        self._sizes = [_numel(m, w) for n, m in self.layers.items() for w in m.tensors()]
        starts = [0]
        for size in self._sizes[:-1]:
            starts.append(starts[-1] + size)
        self._fused_slots = [
            Slot(n, w, self.layers[n], size, start, i)
            for i, ((n, w), size, start) in enumerate(
                zip(self._slots, self._sizes, starts, strict=True)
            )
        ]
        self._mom: Tensor | None = None  # flat momentum, int8 / bf16 / fp32
        self._mom_exp: Tensor | None = None  # int8 format: one exponent per slot
        self.nonfinite_skips: dict[str, int] = {n: 0 for n in self.layers}
        self.overflow_shifts: dict[str, int] = {n: 0 for n in self.layers}
        float_params = list(model.parameters())  # APT layers own no parameters
        self._float_opt = (
            torch.optim.SGD(float_params, lr=lr, momentum=momentum, weight_decay=weight_decay)
            if float_params
            else None
        )

    def zero_grad(self) -> None:
        """Drop the float tensors of the last step (their grads go with them)."""
        for layer in self.layers.values():
            layer.release()
        if self._float_opt is not None:
            self._float_opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def step(self) -> dict[str, LayerStepStats]:
        """Apply one update to every APT layer that saw a gradient this step."""
        stats = self._step_apt()
        self._t += 1
        if self._float_opt is not None:
            for g in self._float_opt.param_groups:
                g["lr"] = self.lr
            self._float_opt.step()
        return stats

    def _step_apt(self) -> dict[str, LayerStepStats]:
        backend = self.backend or get_backend()
        if backend == "int" and self.momentum_format != "int8" and self.momentum:
            log_once(
                "momentum_format",
                "APTSGD: momentum_format=%s runs on the reference "
                "update (the fused passes keep int8 momentum).",
                self.momentum_format,
            )
        elif backend == "int":
            return self._step_fused()
        return self._step_reference()

    def _step_fused(self) -> dict[str, LayerStepStats]:
        exps, raw, bad = fused_step(self, self._fused_slots)
        out: dict[str, LayerStepStats] = {}
        for name in sorted(bad):
            self.nonfinite_skips[name] += 1
            log.warning(
                "layer %s: non-finite update, step skipped (%s so far)",
                name,
                self.nonfinite_skips[name],
            )
        for name, (abs_sum, size, moved, changed, shifts) in raw.items():
            f_old, _ = exps[name]
            self.overflow_shifts[name] += shifts
            out[name] = LayerStepStats(
                gavg=abs_sum / size / 2.0**-f_old,
                underflow=1.0 - changed / moved if moved else 1.0,
                overflow_shifts=shifts,
            )
        for name in bad:
            out[name] = LayerStepStats(gavg=0.0, underflow=0.0, skipped=True)
        for layer in self.layers.values():
            layer.release()
        return {n: out[n] for n in self.layers if n in out}

    def _step_reference(self) -> dict[str, LayerStepStats]:
        lives = [self.layers[n].live(w) for n, w in self._slots]
        active = _active_slots(lives)
        if active is None:
            return {}
        slots = [self._slots[i] for i in active]
        sizes = [self._sizes[i] for i in active]
        n_slot = len(slots)
        seg = torch.repeat_interleave(torch.arange(n_slot), torch.tensor(sizes))
        # flat order is each tensor's stored (GEMM-ready) order, as in the fused passes
        w = torch.cat([self._flat(i, lives[i].detach()) for i in active])  # type: ignore
        g = torch.cat([self._flat(i, lives[i].grad) for i in active])  # type: ignore
        # two roundings (not add's fused multiply-add), as the fused passes compute it
        d = g.add_(w * self.weight_decay) if self.weight_decay else g
        # momentum lives in one flat buffer over every slot; select the active ones
        full = len(active) == len(self._slots)
        mom_all = self._read_momentum() if self.momentum else None
        idx = None if full else self._flat_index(active, sizes)
        prev = None if mom_all is None else (mom_all if idx is None else mom_all[idx])
        if prev is not None:
            d = prev.mul(self.momentum).add_(d)
        u = d * self.lr
        abs_u = u.abs()
        abs_sum = torch.zeros(n_slot, dtype=torch.float64).index_add_(0, seg, abs_u.double())
        bad_layers, d = self._skip_nonfinite(slots, seg, abs_sum, u, abs_u, d, prev)
        if self.momentum:
            self._store_momentum(d, idx, mom_all)
        w_new = w.sub_(u)
        codes, f_old, f_new, shifts = self._round_onto_grid(w_new, slots, seg, idx)
        moved, changed = self._moved_and_changed(active, seg, u, codes)
        sums = abs_sum.tolist()
        out: dict[str, LayerStepStats] = {}
        for i, (name, which), part in zip(
            range(n_slot), slots, torch.split(codes, sizes), strict=True
        ):
            layer = self.layers[name]
            if name in bad_layers:
                out[name] = LayerStepStats(gavg=0.0, underflow=0.0, skipped=True)
                continue
            if which == "weight":
                delta = 2.0 ** -f_old[i]
                self.overflow_shifts[name] += shifts[i]
                if shifts[i]:  # the grid changed; count updates of at least half a step
                    seg_u = abs_u[sum(sizes[:i]) : sum(sizes[: i + 1])]
                    changed[i] = float((seg_u >= delta / 2).sum())
                out[name] = LayerStepStats(
                    gavg=sums[i] / sizes[i] / delta,
                    underflow=1.0 - changed[i] / moved[i] if moved[i] else 1.0,
                    overflow_shifts=shifts[i],
                )
            mat = layer.to_matrix(which, layer.live_codes(which))
            layer.store_codes(which, layer.from_matrix(which, part.view(mat.shape)), f_new[i])
        for layer in self.layers.values():
            layer.release()
        return out

    def _flat_index(self, active: list[int], sizes: list[int]) -> Tensor:
        """Positions of the ``active`` slots in the flat momentum buffer over every slot."""
        return torch.cat(
            [torch.arange(o, o + n) for o, n in zip(self._offsets(active), sizes, strict=True)]
        )

    def _skip_nonfinite(
        self,
        slots: list[tuple[str, str]],
        seg: Tensor,
        abs_sum: Tensor,
        u: Tensor,
        abs_u: Tensor,
        d: Tensor,
        prev: Tensor | None,
    ) -> tuple[set[str], Tensor]:
        """Zero the update of every layer whose update is not finite; (those layers, new d)."""
        bad_layers = {
            slots[i][0] for i in torch.nonzero(~torch.isfinite(abs_sum)).flatten().tolist()
        }
        if bad_layers:
            for name in sorted(bad_layers):
                self.nonfinite_skips[name] += 1
                log.warning(
                    "layer %s: non-finite update, step skipped (%s so far)",
                    name,
                    self.nonfinite_skips[name],
                )
            bad = torch.tensor([n in bad_layers for n, _ in slots])[seg]
            u.masked_fill_(bad, 0.0)
            abs_u.masked_fill_(bad, 0.0)
            # a skipped layer keeps its momentum as it was
            d = d.masked_fill(bad, 0.0) if prev is None else torch.where(bad, prev, d)
        return bad_layers, d

    def _store_momentum(self, d: Tensor, idx: Tensor | None, mom_all: Tensor | None) -> None:
        """Write the active slots' new momentum ``d`` into the flat buffer over every slot."""
        if idx is None:
            new_mom = d
        else:
            new_mom = torch.zeros(sum(self._sizes)) if mom_all is None else mom_all
            new_mom[idx] = d
        self._write_momentum(new_mom)

    def _round_onto_grid(
        self, w_new: Tensor, slots: list[tuple[str, str]], seg: Tensor, idx: Tensor | None
    ) -> tuple[Tensor, list[int], list[int], list[int]]:
        """(codes, old exponents, new exponents, shifts) of the updated weights ``w_new``."""
        n_slot = len(slots)
        # overflow: lower an exponent until its tensor fits (recorded, never clipped)
        amax = torch.zeros(n_slot).scatter_reduce_(0, seg, w_new.abs(), "amax").tolist()
        f_old, f_new, bits, shifts = [], [], [], []
        for i, (name, which) in enumerate(slots):
            layer = self.layers[name]
            b, f = layer.n_bits, layer.exponent(which)
            f2, sh = _fit_exponent(amax[i], b, f)
            f_old.append(f)
            f_new.append(f2)
            bits.append(b)
            shifts.append(sh)
        scale = torch.tensor([2.0**f for f in f_new])[seg]
        hi = torch.tensor([float((1 << (b - 1)) - 1) for b in bits])[seg]
        x = w_new.mul_(scale)
        if self.rounding == "stochastic":
            flat_idx = torch.arange(len(x)) if idx is None else idx
            codes = round_stochastic(x, hash_uniform(flat_idx, *stream_keys(self.seed, self._t, 0)))
        else:
            codes = torch.round(x)
        codes = torch.maximum(torch.minimum(codes, hi), -hi - 1).to(torch.int32)
        return codes, f_old, f_new, shifts

    def _moved_and_changed(
        self, active: list[int], seg: Tensor, u: Tensor, codes: Tensor
    ) -> tuple[list[float], list[float]]:
        """Per active slot: how many weights got a non-zero update, how many codes changed."""
        n_slot = len(active)
        old = torch.cat(
            [
                self._flat(i, self.layers[self._slots[i][0]].live_codes(self._slots[i][1]))
                for i in active
            ]
        )
        moved = torch.zeros(n_slot).index_add_(0, seg, (u != 0).float()).tolist()
        changed = torch.zeros(n_slot).index_add_(0, seg, (codes != old).float()).tolist()
        return moved, changed

    def _flat(self, i: int, t: Tensor) -> Tensor:
        name, which = self._slots[i]
        return self.layers[name].to_matrix(which, t).reshape(-1)

    def _offsets(self, active: list[int]) -> list[int]:
        starts = [0]
        for n in self._sizes[:-1]:
            starts.append(starts[-1] + n)
        return [starts[i] for i in active]

    def _read_momentum(self) -> Tensor | None:
        if self._mom is None:
            return None
        if self.momentum_format == "int8":
            assert self._mom_exp is not None
            scale = torch.pow(2.0, -self._mom_exp.float())
            return self._mom.float().mul_(torch.repeat_interleave(scale, torch.tensor(self._sizes)))
        return self._mom.float()

    def _write_momentum(self, m: Tensor) -> None:
        if self.momentum_format == "bf16":
            self._mom = m.to(torch.bfloat16)
            return
        if self.momentum_format == "fp32":
            self._mom = m.detach().clone()
            return
        n_slot = len(self._sizes)
        seg = torch.repeat_interleave(torch.arange(n_slot), torch.tensor(self._sizes))
        amax = torch.zeros(n_slot).scatter_reduce_(0, seg, m.abs(), "amax").tolist()
        exps = [min(choose_exponent(a, 8), MAX_EXPONENT) for a in amax]
        scale = torch.tensor([2.0**e for e in exps])[seg]
        # stochastic rounding keeps small entries alive in expectation; the per-tensor
        # scale is set by the largest one, so nearest rounding would zero most of them
        noise = hash_uniform(torch.arange(len(m)), *stream_keys(self.seed, self._t, 1))
        q = round_stochastic(m * scale, noise).clamp_(-127, 127)
        self._mom = q.to(torch.int8)
        self._mom_exp = torch.tensor(exps, dtype=torch.int32)

    def state_tensors(self) -> Iterator[Tensor]:
        """Every tensor the optimizer keeps between steps (for measured memory)."""
        for t in (self._mom, self._mom_exp):
            if t is not None:
                yield t
        if self._float_opt is not None:
            for st in self._float_opt.state.values():
                for v in st.values():
                    if isinstance(v, Tensor):
                        yield v

    def state_bits_per_param(self) -> int:
        """Analytic optimizer-state bits per APT parameter."""
        if not self.momentum:
            return 0
        return {"int8": 8, "bf16": 16, "fp32": 32}[self.momentum_format]


def _numel(layer: APTLayer, which: str) -> int:
    shape = layer.weight_shape if which == "weight" else layer.bias_shape
    n = 1
    for dim in shape or ():
        n *= dim
    return n


def _active_slots(lives: list[Tensor | None]) -> list[int] | None:
    """Indices of the slots to update (all of them, or those with a grad); None: none."""
    if all(t is not None and t.grad is not None for t in lives):
        return list(range(len(lives)))
    # a layer outside this step's graph: fall back to updating only those with grads
    active = [i for i, t in enumerate(lives) if t is not None and t.grad is not None]
    return active or None


def _fit_exponent(amax: float, bits: int, f: int) -> tuple[int, int]:
    """Lower the exponent until ``amax`` fits the ``bits`` range; returns (f, shifts)."""
    _, hi = code_range(bits)
    shifts = 0
    while amax * 2.0**f > hi + 0.5 and shifts < 64:
        f -= 1
        shifts += 1
    return f, shifts
