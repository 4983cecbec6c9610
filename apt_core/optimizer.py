"""SGD without a master copy: the only code that writes an APT layer's integer codes."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from apt_core.layers import APTLayer, apt_layers
from apt_core.quant import choose_exponent, code_range, quantize

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


class _Momentum:
    """One momentum buffer kept in low precision between steps."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.value: Tensor | None = None
        self.exponent = 0

    def read(self) -> Tensor | None:
        if self.value is None:
            return None
        if self.fmt == "int8":
            return self.value.float() * (2.0 ** -self.exponent)
        return self.value.float()

    def write(self, m: Tensor, generator: torch.Generator) -> None:
        if self.fmt == "int8":
            amax = float(m.abs().max())
            self.exponent = choose_exponent(amax, 8)
            # stochastic rounding keeps small entries alive in expectation; the per-tensor
            # scale is set by the largest one, so nearest rounding would zero most of them
            self.value = quantize(m, 8, self.exponent, "stochastic", generator).to(torch.int8)
        elif self.fmt == "bf16":
            self.value = m.to(torch.bfloat16)
        else:
            self.value = m.detach().clone()


class APTSGD:
    """SGD (optional momentum and weight decay) that writes Q(w - u) straight into codes.

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
        Storage of momentum buffers between steps: "int8" (per-tensor dynamic fixed
        point, stochastic rounding), "bf16" or "fp32".
    seed : int (default: 0)
        Seed of the stochastic rounding source.
    """

    def __init__(self, model: nn.Module, lr: float, momentum: float = 0.9,
                 weight_decay: float = 0.0, rounding: str = "nearest",
                 momentum_format: str = "int8", seed: int = 0) -> None:
        if not lr > 0:
            raise ValueError(f"lr={lr!r} must be > 0.")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum={momentum!r} must be in [0, 1).")
        if momentum_format not in MOMENTUM_FORMATS:
            raise ValueError(f"momentum_format={momentum_format!r} is not one of "
                             f"{MOMENTUM_FORMATS}.")
        if rounding not in ("nearest", "stochastic"):
            raise ValueError(f"rounding={rounding!r} is not one of ('nearest', 'stochastic').")
        self.layers = apt_layers(model)
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.rounding = rounding
        self.momentum_format = momentum_format
        self.generator = torch.Generator().manual_seed(seed)
        self._mom: dict[tuple[str, str], _Momentum] = {}
        self.nonfinite_skips: dict[str, int] = {n: 0 for n in self.layers}
        self.overflow_shifts: dict[str, int] = {n: 0 for n in self.layers}
        apt_ids = {id(b) for m in self.layers.values() for b in m.buffers()}
        float_params = [p for p in model.parameters() if id(p) not in apt_ids]
        self._float_opt = (torch.optim.SGD(float_params, lr=lr, momentum=momentum,
                                           weight_decay=weight_decay)
                           if float_params else None)

    def zero_grad(self) -> None:
        """Drop the float tensors of the last step (their grads go with them)."""
        for layer in self.layers.values():
            layer.release()
        if self._float_opt is not None:
            self._float_opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def step(self) -> dict[str, LayerStepStats]:
        """Apply one update to every APT layer that saw a gradient this step."""
        stats: dict[str, LayerStepStats] = {}
        for name, layer in self.layers.items():
            s = self._step_layer(name, layer)
            if s is not None:
                stats[name] = s
        if self._float_opt is not None:
            for g in self._float_opt.param_groups:
                g["lr"] = self.lr
            self._float_opt.step()
        return stats

    def _step_layer(self, name: str, layer: APTLayer) -> LayerStepStats | None:
        live = {w: layer.live(w) for w in layer.tensors()}
        if live["weight"] is None or live["weight"].grad is None:
            return None
        grads = {w: t.grad for w, t in live.items() if t is not None and t.grad is not None}
        if not all(bool(torch.isfinite(g).all()) for g in grads.values()):
            self.nonfinite_skips[name] += 1
            log.warning("layer %s: non-finite gradient, step skipped (%s so far)", name,
                        self.nonfinite_skips[name])
            layer.release()
            return LayerStepStats(gavg=0.0, underflow=0.0, skipped=True)
        out = None
        bits = layer.n_bits
        for which, g in grads.items():
            w = live[which]
            assert w is not None
            f = layer.exponent(which)
            delta = 2.0 ** -f
            d = g + self.weight_decay * w if self.weight_decay else g
            if self.momentum:
                buf = self._mom.setdefault((name, which), _Momentum(self.momentum_format))
                prev = buf.read()
                d = d if prev is None else prev.mul_(self.momentum).add_(d)
                buf.write(d, self.generator)
            u = self.lr * d
            w_new = w - u
            old_codes = torch.round(w * (2.0 ** f)).to(torch.int32)
            f_new, shifts = _fit_exponent(w_new, bits, f)
            new_codes = quantize(w_new, bits, f_new, self.rounding, self.generator)
            layer.store_codes(which, new_codes, f_new)
            if which == "weight":
                self.overflow_shifts[name] += shifts
                moved = u != 0
                if shifts == 0:
                    stuck = (new_codes == old_codes) & moved
                else:  # the grid changed; judge by the update against half a step
                    stuck = (u.abs() < delta / 2) & moved
                n_moved = int(moved.sum())
                out = LayerStepStats(
                    gavg=float(u.abs().mean()) / delta,
                    underflow=float(stuck.sum()) / n_moved if n_moved else 1.0,
                    overflow_shifts=shifts)
        layer.release()
        return out

    def state_tensors(self) -> Iterator[Tensor]:
        """Every tensor the optimizer keeps between steps (for measured memory)."""
        for buf in self._mom.values():
            if buf.value is not None:
                yield buf.value
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


def _fit_exponent(w: Tensor, bits: int, f: int) -> tuple[int, int]:
    """Lower the exponent until ``w`` fits the ``bits`` range; returns (f, shifts)."""
    _, hi = code_range(bits)
    amax = float(w.abs().max())
    shifts = 0
    while amax * 2.0**f > hi + 0.5 and shifts < 64:
        f -= 1
        shifts += 1
    return f, shifts
