"""Small elementwise kernels compiled by inductor once, with an eager fallback.

Eager torch spends most of a small step on separate passes (scale, round, clamp,
convert; mask, select). Each function here is one fused loop once compiled with dynamic
shapes and its scalars passed as tensors, so neither batch size nor exponent changes
recompile it. Without a working compiler every call runs the same code eagerly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from apt_core.kernels.backend import log_once

_enabled = {"compile": True}


class Compiled:
    """Calls ``fn`` compiled by inductor, or eagerly once compilation has failed."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.compiled: Callable[..., Any] | None = None
        self.eager = False

    def __call__(self, *args: Any) -> Any:
        if not self.eager and _enabled["compile"]:
            try:
                if self.compiled is None:
                    _allow_variants()
                    self.compiled = torch.compile(self.fn, dynamic=True, fullgraph=True)
                return self.compiled(*args)
            except Exception as exc:  # noqa: BLE001 - any compiler failure means eager
                self.eager = True
                log_once("compile", "torch.compile of the APT kernels failed (%s); running "
                         "them eagerly from now on.", exc)
        return self.fn(*args)


#: Graphs one kernel may need: its flags (limbs, momentum, weight decay, rounding) times
#: the view layouts of whole tensors and row blocks. Past dynamo's default limit (8) the
#: kernel would run eagerly for the rest of the process.
RECOMPILE_LIMIT = 64


def _allow_variants() -> None:
    cfg = torch._dynamo.config
    cfg.recompile_limit = max(cfg.recompile_limit, RECOMPILE_LIMIT)
    cfg.accumulated_recompile_limit = max(cfg.accumulated_recompile_limit, 4 * RECOMPILE_LIMIT)


def set_compiled(enabled: bool) -> None:
    """Use compiled kernels (default) or always run them eagerly (same results)."""
    _enabled["compile"] = enabled


def _quantize(x: Tensor, p: Tensor) -> Tensor:
    # p = [2**f, lo, hi]
    return torch.minimum(torch.maximum(torch.round(x * p[0]), p[1]), p[2]).to(torch.int8)


def _rescale(acc: Tensor, scale: Tensor) -> Tensor:
    return acc.to(torch.float32) * scale


def _rescale_bias(acc: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
    return acc.to(torch.float32) * scale + bias


def _relu_grad(g: Tensor, mask: Tensor) -> Tensor:
    # bit mask on the float's int32 view: exact (+0 where masked, NaN-safe like
    # masked_fill) and one vectorized pass over a uint8 mask (bool loads are slow here)
    return (g.view(torch.int32) & (-mask.to(torch.int32))).view(torch.float32)


quantize_int8 = Compiled(_quantize)
relu_grad = Compiled(_relu_grad)
rescale = Compiled(_rescale)
rescale_bias = Compiled(_rescale_bias)
