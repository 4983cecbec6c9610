"""The three integer products of APT convolutions, on the NHWC im2col primitives.

1-d convolutions run as 2-d ones with a unit height. Above 8 bits the weight is two
int8 limbs (``code = 256 * hi + lo + 128``): the forward runs both limbs in one call
(stacked along the output channels), the input gradient in one call with the limbs
stacked along the input channels, and the ``+128`` offset enters through a convolution
of the channel-summed codes with a ones kernel (one channel, exact in float32).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import grad as nn_grad

from apt_core.kernels import conv_geometry, conv_weight_grad, im2col, native
from apt_core.kernels.gemm import combine, rescale_float
from apt_core.kernels.matmul import INT32_EXACT_REDUCTION


def _native_nhwc(acc: Tensor) -> bool:
    """True when the native kernels can rescale ``acc``: dense int32, channels innermost."""
    return acc.dtype == torch.int32 and native.dense(acc) and acc.stride(1) == 1


#: Chunk budget of the streamed limb forward: twice the default, as fewer chunks save their
#: per-call overhead and the forward is not where a step's peak lies (that is the backward,
#: which also keeps the float error and input gradient alive).
FORWARD_CHUNK_BYTES = 2 * im2col.DEFAULT_CHUNK_BYTES


def _limb_epilogue(
    channels: int, scale: float, bias: Tensor | None, chunk_bytes: int
) -> im2col.Epilogue:
    """Recombine a chunk of ``(rows, 2C + 1)`` limb accumulators into float32 rows.

    The columns are the high limbs' products, the low limbs', then the offset sums.
    """

    def finish(acc: Tensor, out: Tensor) -> None:
        native.combine_rows(acc, channels, scale, bias, out)

    return im2col.Epilogue(channels, finish, chunk_bytes)


class ConvProducts:
    """Products of one convolution geometry (``groups == 1``)."""

    def __init__(self, weight_shape: tuple[int, ...], conv_args: dict[str, Any]) -> None:
        self.one_d = len(weight_shape) == 3
        self.out_ch, self.in_ch = weight_shape[0], weight_shape[1]
        self.kernel = (1, weight_shape[2]) if self.one_d else tuple(weight_shape[2:])
        self.geo = {k: self._two(k, v) for k, v in conv_args.items() if k != "groups"}

    def _two(self, key: str, v: Any) -> tuple[int, int]:
        t = (v,) if isinstance(v, int) else tuple(v)
        if self.one_d:
            return (0 if key == "padding" else 1, t[0])
        return (t[0], t[0]) if len(t) == 1 else (t[0], t[1])

    def _g(self) -> tuple[Any, ...]:
        g = self.geo
        return self.kernel, g["stride"], g["padding"], g["dilation"]

    def _4d(self, t: Tensor) -> Tensor:
        return t.unsqueeze(2) if self.one_d else t

    def _back(self, t: Tensor) -> Tensor:
        return t.squeeze(2) if self.one_d else t

    def _offset(self, codes: Tensor, transpose_to: tuple[int, ...] | None) -> Tensor:
        """Exact int32 convolution (or its input gradient) of channel sums with ones."""
        k, s, p, d = self._g()
        chan = codes.sum(1, keepdim=True, dtype=torch.int32).to(torch.float32)
        ones = torch.ones((1, 1, *k))
        if transpose_to is None:
            out = F.conv2d(chan, ones, stride=s, padding=p, dilation=d)
        else:
            out = nn_grad.conv2d_input(transpose_to, ones, chan, stride=s, padding=p, dilation=d)
        return out.to(torch.int32)

    def forward(self, xq: Tensor, w: Tensor, limbs: bool) -> Tensor:
        """Exact convolution of input codes ``xq`` with weight matrix ``w``, as float32."""
        k, s, p, d = self._g()
        x4 = self._4d(xq)
        acc = im2col.conv2d_forward_int(x4, w, k, s, p, d)
        if not limbs:
            return self._back(acc.to(torch.float32))
        o = self.out_ch
        y = combine(acc[:, :o], acc[:, o:], self._offset(x4, None))
        return self._back(y)

    def forward_scaled(
        self, xq: Tensor, w: Tensor, limbs: bool, scale: float, b: Tensor | None
    ) -> Tensor:
        """``forward(...) * scale + b``: one native pass over the int32 accumulator.

        Above 8 bits the weight matrix gains a row of ones, so the same GEMM also yields
        the receptive-field sums of the input codes, the limbs' ``+128`` offset term; the
        limbs are then recombined chunk by chunk (``im2col.Epilogue``), so the
        ``(N*Ho*Wo, 2*O + 1)`` accumulator never exists whole.
        """
        if native.lib() is None:
            bias = None if b is None else self.bias_view(b)
            return rescale_float(self.forward(xq, w, limbs), scale, bias)
        k, s, p, d = self._g()
        if limbs:
            w = torch.cat((w, torch.ones((1, w.shape[1]), dtype=torch.int8)))
            if w.shape[1] <= INT32_EXACT_REDUCTION:  # the epilogue needs int32 sums
                bias = None if b is None else b.contiguous()
                epi = _limb_epilogue(self.out_ch, scale, bias, FORWARD_CHUNK_BYTES)
                y = im2col.conv2d_forward_int(self._4d(xq), w, k, s, p, d, epilogue=epi)
                return self._back(y)
        acc = im2col.conv2d_forward_int(self._4d(xq), w, k, s, p, d)
        return self._back(self._finish(acc, limbs, scale, b))

    def input_grad_scaled(
        self, gq: Tensor, w: Tensor, limbs: bool, x_shape: torch.Size, scale: float
    ) -> Tensor:
        """``input_grad(...) * scale``: one native pass over the int32 accumulator.

        Above 8 bits the limbs act as 2C input channels plus one channel of ones, whose
        gradient is the error's receptive-field sums, the ``+128`` offset term; as in
        :meth:`forward_scaled` they are recombined chunk by chunk.
        """
        if native.lib() is None:
            return rescale_float(self.input_grad(gq, w, limbs, x_shape), scale, None)
        k, s, p, d = self._g()
        hw = (1, x_shape[-1]) if self.one_d else (x_shape[-2], x_shape[-1])
        if limbs:
            o, c = self.out_ch, self.in_ch
            hi, lo = (t.view(o, k[0], k[1], c) for t in w.chunk(2))
            ones = torch.ones((o, k[0], k[1], 1), dtype=torch.int8)
            w = torch.cat((hi, lo, ones), dim=3).reshape(o, -1)
            if o * k[0] * k[1] <= INT32_EXACT_REDUCTION:
                epi = _limb_epilogue(c, scale, None, im2col.DEFAULT_CHUNK_BYTES)
                dx = im2col.conv2d_input_grad_int(self._4d(gq), w, hw, k, s, p, d, epilogue=epi)
                return self._back(dx)
        acc = im2col.conv2d_input_grad_int(self._4d(gq), w, hw, k, s, p, d)
        return self._back(self._finish(acc, limbs, scale, None))

    @staticmethod
    def _finish(acc: Tensor, limbs: bool, scale: float, b: Tensor | None) -> Tensor:
        """float32 ``acc * scale + b`` of a channels-last accumulator; limbs recombined first.

        With ``limbs`` ``acc`` holds 2C + 1 channels: the high limbs' products, the low
        limbs', then the offset sums.
        """
        if not limbs:
            return ConvProducts._rescale(acc, scale, b)
        n, c2, h, w = acc.shape
        c = c2 // 2
        if _native_nhwc(acc):
            rows = acc.permute(0, 2, 3, 1).reshape(-1, c2)  # a view: NHWC is contiguous
            bias = None if b is None else b.contiguous()
            out = native.combine(rows[:, :c], rows[:, c : 2 * c], rows[:, 2 * c], scale, bias)
            return out.view(n, h, w, c).permute(0, 3, 1, 2)
        y = combine(acc[:, :c], acc[:, c : 2 * c], acc[:, 2 * c :])
        return rescale_float(y, scale, None if b is None else b.view(1, -1, 1, 1))

    @staticmethod
    def _rescale(acc: Tensor, scale: float, b: Tensor | None) -> Tensor:
        """Native rescale of a channels-last int32 accumulator (torch's when it is not)."""
        if _native_nhwc(acc):
            bias = None if b is None else b.contiguous()
            return native.rescale(acc, scale, bias, inner=1)
        bias4 = None if b is None else b.view(1, -1, 1, 1)
        return rescale_float(acc.to(torch.float32), scale, bias4)

    def input_grad(self, gq: Tensor, w: Tensor, limbs: bool, x_shape: torch.Size) -> Tensor:
        """Exact input gradient (shape ``x_shape``) of error codes ``gq``, as float32."""
        k, s, p, d = self._g()
        g4 = self._4d(gq)
        hw = (1, x_shape[-1]) if self.one_d else (x_shape[-2], x_shape[-1])
        if not limbs:
            return self._back(im2col.conv2d_input_grad_int(g4, w, hw, k, s, p, d).to(torch.float32))
        o, c = self.out_ch, self.in_ch
        hi, lo = (t.view(o, k[0], k[1], c) for t in w.chunk(2))
        both = torch.cat((hi, lo), dim=3).reshape(o, -1)  # limbs as 2C input channels
        acc = im2col.conv2d_input_grad_int(g4, both, hw, k, s, p, d)
        off = self._offset(g4, (g4.shape[0], 1, *hw))
        return self._back(combine(acc[:, :c], acc[:, c:], off))

    def weight_grad(self, gq: Tensor, xq: Tensor) -> Tensor:
        """Exact int32 weight gradient, in the stored ``(O, kh*kw*C)`` matrix order."""
        k, s, p, d = self._g()
        return conv_weight_grad.conv2d_weight_grad_int(self._4d(gq), self._4d(xq), k, s, p, d)

    def bias_grad(self, gq: Tensor) -> Tensor:
        """Exact int32 bias gradient: error codes summed over batch and positions.

        Natively without torch's int32 copy of the codes (4x their size: 1 MB at the
        digits CNN's conv2, batch 64, where it set the step's peak).
        """
        if native.lib() is not None and gq.numel() > 0:
            sums = native.channel_sums(gq)
            if sums is not None:
                return sums
        dims = (0, 2) if self.one_d else (0, 2, 3)
        return gq.sum(dims, dtype=torch.int32)

    def bias_view(self, b: Tensor) -> Tensor:
        """The bias shaped to broadcast over the output's channel axis."""
        return b.view(1, -1, 1) if self.one_d else b.view(1, -1, 1, 1)

    def float_step(self, x: Tensor, w: Tensor, gy: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Float input, weight (matrix order) and bias gradients, for a non-finite error."""
        k, s, p, d = self._g()
        x4, g4 = self._4d(x), self._4d(gy)
        w4 = w.unsqueeze(2) if self.one_d else w
        dx = nn_grad.conv2d_input(x4.shape, w4, g4, stride=s, padding=p, dilation=d)
        dw = nn_grad.conv2d_weight(x4, w4.shape, g4, stride=s, padding=p, dilation=d)
        return self._back(dx), conv_geometry.weight_matrix(dw), g4.sum((0, 2, 3))
