"""Inductor compilation of the optimizer's kernels where it pays, with an eager fallback.

Eager torch spends most of a large tensor's update on separate passes (scale, round,
clamp, convert). :class:`Compiled` fuses such a kernel into one loop, compiled with dynamic
shapes and its scalars passed as tensors, so neither sizes nor exponents recompile it; it
runs small tensors eagerly (see :data:`COMPILE_MIN_NUMEL`) and everything eagerly when no
compiler works. The activation and error kernels below always run eagerly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from apt_core.kernels.backend import log_once

_enabled = {"compile": True}

#: Tensors smaller than this run the same kernels eagerly. Measured on the 2-core EPYC of
#: docs/results/runtime: a compiled call costs ~0.15 ms of guard checks and a first call
#: 10-45 s of compilation per process, which only pays on large tensors (MLP 64-1024-1024
#: b64, 8 bits: 14 ms/step compiled vs 91 ms eager), while the digits CNN, whose largest
#: tensor holds 36,864 weights, steps faster eagerly (26 ms vs 34 ms) and starts at once.
COMPILE_MIN_NUMEL = 1 << 17


class Compiled:
    """Calls ``fn`` compiled by inductor on large tensors and eagerly otherwise.

    It compiles when a tensor argument holds at least ``min_numel`` elements; below that, or once
    compilation has failed, ``fn`` runs eagerly.
    """

    def __init__(self, fn: Callable[..., Any], min_numel: int = 0) -> None:
        self.fn = fn
        self.min_numel = min_numel
        self.compiled: Callable[..., Any] | None = None
        self.eager = False

    def __call__(self, *args: Any) -> Any:
        """Run ``fn`` on ``args``, compiling it on the first large enough call."""
        if not self.eager and _enabled["compile"] and _large(args, self.min_numel):
            try:
                if self.compiled is None:
                    _allow_variants()
                    self.compiled = torch.compile(self.fn, dynamic=True, fullgraph=True)
                return self.compiled(*args)
            except Exception as exc:  # noqa: BLE001 - any compiler failure means eager
                self.eager = True
                log_once(
                    "compile",
                    "torch.compile of the APT kernels failed (%s); running "
                    "them eagerly from now on.",
                    exc,
                )
        return self.fn(*args)


#: Graphs one kernel may need: its flags (limbs, momentum, weight decay, rounding) times
#: the view layouts of whole tensors and row blocks. Past dynamo's default limit (8) the
#: kernel would run eagerly for the rest of the process.
RECOMPILE_LIMIT = 64


def _allow_variants() -> None:
    cfg = torch._dynamo.config
    cfg.recompile_limit = max(cfg.recompile_limit, RECOMPILE_LIMIT)
    cfg.accumulated_recompile_limit = max(cfg.accumulated_recompile_limit, 4 * RECOMPILE_LIMIT)


def _large(args: tuple[Any, ...], min_numel: int) -> bool:
    return any(isinstance(a, Tensor) and a.numel() >= min_numel for a in args)


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


# The activation and error kernels run eagerly: compiled, they measured no faster on the
# MLP at batch 256 (0.87x / 1.11x fp32 at 8 / 12 bits either way) and slower on the CNNs,
# whose first step then waited 10-45 s for compilation.
quantize_int8 = _quantize
relu_grad = _relu_grad
rescale = _rescale
rescale_bias = _rescale_bias
