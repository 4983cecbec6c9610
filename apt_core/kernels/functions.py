"""Autograd functions running an APT layer's three GEMMs on int8 codes.

Forward: the input is rounded onto its ``act_bits`` dynamic grid as int8 codes, which
are all that is saved for backward; ``codes @ weight`` accumulates exactly in int32 and
is rescaled by ``2**-(f_x + f_w)``; the bias is added in float. Backward: the error is
rounded onto its ``err_bits`` grid as int8; the input gradient is ``error @ weight`` and
the weight gradient ``error.T @ input`` stays an exact integer accumulator handed to the
layer (``accept_grad``) with its exponent, for APTSGD to consume.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from apt_core.kernels.gemm import linear_forward, linear_input_grad, quantize_codes
from apt_core.kernels.weight_grad import DeferredGrad, bias_grad, linear_weight_grad


class IntGemmLayer(Protocol):
    """What the functions need from a layer (an :class:`apt_core.layers.APTLayer`)."""

    act_bits: int
    err_bits: int

    def stored(self, which: str) -> Tensor:
        """The stored int8 matrix of ``"weight"`` or ``"bias"`` (codes or limbs)."""

    def exponent(self, which: str = "weight") -> int:
        """The tensor's exponent f (step 2**-f)."""

    @property
    def n_bits(self) -> int:
        """Current bit-width; above 8 the weight is stored as two int8 limbs."""

    def bias_float(self) -> Tensor | None:
        """The float bias, as a transient (None without a bias)."""

    def accept_grad(self, which: str, grad: Tensor | DeferredGrad, exponent: int) -> None:
        """Take (or add to) this step's gradient ``grad * 2**-exponent`` from the backward."""

    def weight_float(self) -> Tensor:
        """The float weight (real shape), as a transient."""


class Products(Protocol):
    """The three integer products of one layer type, on int8 codes."""

    def forward(self, xq: Tensor, w: Tensor, limbs: bool) -> Tensor:
        """Exact product of input codes ``xq`` and stored weight ``w``, as float32."""

    def input_grad(self, gq: Tensor, w: Tensor, limbs: bool, x_shape: torch.Size) -> Tensor:
        """Exact input gradient (shape ``x_shape``) of error codes ``gq``, as float32."""

    def forward_scaled(
        self, xq: Tensor, w: Tensor, limbs: bool, scale: float, b: Tensor | None
    ) -> Tensor:
        """``forward(...) * scale + b`` (the layer's output), fused where possible."""

    def input_grad_scaled(
        self, gq: Tensor, w: Tensor, limbs: bool, x_shape: torch.Size, scale: float
    ) -> Tensor:
        """``input_grad(...) * scale`` (the input gradient), fused where possible."""

    def weight_grad(self, gq: Tensor, xq: Tensor) -> Tensor | DeferredGrad:
        """Exact integer weight gradient in stored order (or its deferred factors)."""

    def bias_grad(self, gq: Tensor) -> Tensor:
        """Exact int32 bias gradient: error codes summed over all but the channel axis."""

    def bias_view(self, b: Tensor) -> Tensor:
        """The bias shaped to broadcast over the output."""

    def float_step(self, x: Tensor, w: Tensor, gy: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Float input, weight and bias gradients, for an error that is not finite."""


class LinearProducts:
    """Products of a linear layer on ``(M, K)`` codes (leading dims flattened)."""

    def forward(self, xq: Tensor, w: Tensor, limbs: bool) -> Tensor:
        """Exact ``xq @ w.T`` on int8 codes, as float32 with ``xq``'s leading dims."""
        y = linear_forward(xq.reshape(-1, xq.shape[-1]), w, limbs)
        return y.view(*xq.shape[:-1], y.shape[-1])

    def input_grad(self, gq: Tensor, w: Tensor, limbs: bool, x_shape: torch.Size) -> Tensor:
        """Exact ``gq @ w`` on int8 codes, as float32 of shape ``x_shape``."""
        return linear_input_grad(gq.reshape(-1, gq.shape[-1]), w, limbs).view(x_shape)

    def weight_grad(self, gq: Tensor, xq: Tensor) -> Tensor | DeferredGrad:
        """Exact ``gq.T @ xq`` (deferred for a wide layer, see ``linear_weight_grad``)."""
        return linear_weight_grad(gq.reshape(-1, gq.shape[-1]), xq.reshape(-1, xq.shape[-1]))

    def forward_scaled(
        self, xq: Tensor, w: Tensor, limbs: bool, scale: float, b: Tensor | None
    ) -> Tensor:
        """``forward(...) * scale + b`` in one pass over the accumulator where possible."""
        y = linear_forward(xq.reshape(-1, xq.shape[-1]), w, limbs, scale, b)
        return y.view(*xq.shape[:-1], y.shape[-1])

    def input_grad_scaled(
        self, gq: Tensor, w: Tensor, limbs: bool, x_shape: torch.Size, scale: float
    ) -> Tensor:
        """``input_grad(...) * scale`` in one pass over the accumulator where possible."""
        return linear_input_grad(gq.reshape(-1, gq.shape[-1]), w, limbs, scale).view(x_shape)

    def bias_grad(self, gq: Tensor) -> Tensor:
        """Exact int32 bias gradient: error codes summed over the flattened rows."""
        return bias_grad(gq.reshape(-1, gq.shape[-1]))

    def bias_view(self, b: Tensor) -> Tensor:
        """The bias unchanged: it already broadcasts over ``(..., out)``."""
        return b

    def float_step(self, x: Tensor, w: Tensor, gy: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Float input, weight and bias gradients, for an error that is not finite."""
        g2, x2 = gy.reshape(-1, gy.shape[-1]), x.reshape(-1, x.shape[-1])
        return (g2 @ w).view(x.shape), g2.t() @ x2, g2.sum(0)


class IntGemmFunction(torch.autograd.Function):
    """``y = x @ W`` (linear or convolution) on int8 codes; see the module docstring."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        anchor: Tensor,
        layer: IntGemmLayer,  # type: ignore[override]
        ops: Products,
        xq: Tensor,
        fx: int,
    ) -> Tensor:
        """The output from the input's int8 codes ``xq`` (exponent ``fx``), kept for backward."""
        del anchor  # only there so that autograd reaches this layer's backward
        w, fw, limbs = layer.stored("weight"), layer.exponent("weight"), layer.n_bits > 8
        b = layer.bias_float()
        y = ops.forward_scaled(xq, w, limbs, 2.0 ** -(fx + fw), b)
        ctx.layer, ctx.ops, ctx.xq, ctx.fx = layer, ops, xq, fx
        ctx.w, ctx.fw, ctx.limbs, ctx.x_shape = w, fw, limbs, x.shape
        ctx.has_bias = b is not None
        return y

    @staticmethod
    def backward(ctx: Any, gy: Tensor) -> tuple[Tensor | None, None, None, None, None, None]:
        """Input gradient for autograd; the layer's integer gradients go to ``accept_grad``."""
        layer, ops = ctx.layer, ctx.ops
        q = quantize_codes(gy, layer.err_bits)
        need_dx = ctx.needs_input_grad[0]
        if q is None:  # non-finite error: the reference passes it through unrounded
            x = ctx.xq.to(torch.float32) * 2.0**-ctx.fx
            dx, dw, db = ops.float_step(x, layer.weight_float(), gy)
            layer.accept_grad("weight", dw, 0)
            if ctx.has_bias:
                layer.accept_grad("bias", db, 0)
            return (dx if need_dx else None), None, None, None, None, None
        gq, fe = q
        dx = None
        if need_dx:
            dx = ops.input_grad_scaled(gq, ctx.w, ctx.limbs, ctx.x_shape, 2.0 ** -(fe + ctx.fw))
        layer.accept_grad("weight", ops.weight_grad(gq, ctx.xq), fe + ctx.fx)
        if ctx.has_bias:
            layer.accept_grad("bias", ops.bias_grad(gq), fe)
        ctx.xq = ctx.w = None
        return dx, None, None, None, None, None


def int_gemm(x: Tensor, layer: IntGemmLayer, ops: Products, track: bool) -> Tensor | None:
    """Run ``layer`` on the integer path; None when ``x`` has no finite grid (fall back)."""
    q = quantize_codes(x, layer.act_bits)
    if q is None:
        return None
    anchor = torch.empty(0, requires_grad=track)
    return IntGemmFunction.apply(x, anchor, layer, ops, q[0], q[1])  # type: ignore[no-any-return]
