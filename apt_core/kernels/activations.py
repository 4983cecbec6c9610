"""ReLU and max pooling whose backward keeps a mask or small indices, not a float tensor.

``nn.ReLU`` saves its float output for backward and ``nn.MaxPool2d`` its float input and
int64 indices. Next to APT layers (which save int8 codes) those float tensors dominate a
step's memory, so ``to_apt`` swaps in these drop-in subclasses: numerically identical,
they save a mask (1 bit per element with the native kernels, else 1 byte) or int16/int32
window indices.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from apt_core.kernels import native
from apt_core.kernels.backend import get_backend
from apt_core.kernels.compiled import relu_grad


class _ReLUMask(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        # eager: inductor's bool stores measured ~20x slower than these two passes; the
        # mask is kept as uint8, which the compiled backward loads fast (bool: slow)
        # (relu(x) != 0) is nn.ReLU's test (result <= 0 drops the gradient): NaN passes
        ctx.packed = None
        if native.lib() is not None and x.dtype == torch.float32 and native.dense(x):
            # natively the mask is packed 8 to a byte: the uint8 masks of the digits CNN's
            # first two ReLUs (131 + 262 KB at batch 64) were in every phase of its peak
            y, mask = native.relu_bits(x)
            ctx.packed = (x.shape, x.stride())
        else:
            y = torch.relu(x)
            mask = (y != 0).view(torch.uint8)
        ctx.save_for_backward(mask)
        return y

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:  # type: ignore[override]
        (mask,) = ctx.saved_tensors
        if ctx.packed is not None:
            shape, stride = ctx.packed
            if native.lib() is not None and g.dtype == torch.float32 and g.shape == shape:
                if g.stride() != stride:  # lay g out as the mask is (its bits are in x's order)
                    g = torch.empty_strided(shape, stride, dtype=g.dtype).copy_(g)
                return native.relu_grad_bits(g, mask)
            mask = _unpack(mask, shape, stride)
        if g.dtype != torch.float32:
            return g.masked_fill(mask.logical_not(), 0.0)
        if native.lib() is not None:
            return native.relu_grad(g, mask)
        return relu_grad(g.contiguous(), mask.contiguous())  # type: ignore[no-any-return]


def _unpack(bits: Tensor, shape: torch.Size, stride: tuple[int, ...]) -> Tensor:
    """The uint8 mask of a dense tensor ``(shape, stride)`` from its packed bits."""
    n = shape.numel()
    shifts = torch.arange(8, dtype=torch.uint8)
    flat = ((bits.view(-1, 1) >> shifts) & 1).view(-1)[:n]
    return flat.as_strided(shape, stride)


class APTReLU(nn.ReLU):
    """``nn.ReLU`` that saves a (bit-packed) mask for backward (on the integer backend)."""

    def forward(self, x: Tensor) -> Tensor:
        """ReLU; when training on the integer backend, save only the mask for backward."""
        if get_backend() == "int" and torch.is_grad_enabled() and x.requires_grad:
            return _ReLUMask.apply(x)  # type: ignore[no-any-return]
        return super().forward(x)


class _MaxPoolIdx(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, pool: nn.MaxPool2d) -> Tensor:  # type: ignore[override]
        y, idx = F.max_pool2d(
            x,
            pool.kernel_size,
            pool.stride,
            pool.padding,
            pool.dilation,
            ceil_mode=pool.ceil_mode,
            return_indices=True,
        )
        plane = x.shape[-1] * x.shape[-2]
        small = torch.int16 if plane <= 32767 else torch.int32
        ctx.save_for_backward(idx.to(small))
        ctx.x_shape = x.shape
        ctx.channels_last = not x.is_contiguous() and x.is_contiguous(
            memory_format=torch.channels_last
        )
        return y

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (idx,) = ctx.saved_tensors
        n, c, h, w = ctx.x_shape
        # in the input's layout: the ReLU mask before a pool is laid out like it, and a
        # layout mismatch made the ReLU backward copy its mask (262 KB at the digits CNN)
        fmt = torch.channels_last if ctx.channels_last else torch.contiguous_format
        gx = torch.empty((n, c, h, w), dtype=g.dtype, device=g.device, memory_format=fmt)
        gx.zero_()
        # windows do not overlap (checked at swap time), so every input gets <= 1 value
        gx.view(n, c, h * w).scatter_(2, idx.reshape(n, c, -1).to(torch.int64), g.reshape(n, c, -1))
        return gx, None


class APTMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` with non-overlapping windows that saves only compact indices."""

    @staticmethod
    def supports(m: nn.MaxPool2d) -> bool:
        """True when the windows of ``m`` never overlap (stride >= kernel, no dilation)."""
        k = _pair(m.kernel_size)
        s = _pair(m.stride if m.stride is not None else m.kernel_size)
        return (
            not m.return_indices and _pair(m.dilation) == (1, 1) and s[0] >= k[0] and s[1] >= k[1]
        )

    def forward(self, x: Tensor) -> Tensor:
        """Max-pool; when training on the integer backend, save only compact indices."""
        if get_backend() == "int" and torch.is_grad_enabled() and x.requires_grad and x.dim() == 4:
            return _MaxPoolIdx.apply(x, self)  # type: ignore[no-any-return]
        return super().forward(x)


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))
