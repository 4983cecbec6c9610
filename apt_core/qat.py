"""The qat8 baseline: FP32 master weights plus an 8-bit fake-quantized copy (STE)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from apt_core.quant import choose_exponent, fake_quantize_dynamic, quantize, quantize_activation


class _QATMixin:
    """Shared by the QAT layers: keeps the int8 copy that QAT stores beside the master."""

    qbits: int
    weight_q: Tensor

    def _init_q(self, bits: int) -> None:
        self.qbits = bits
        shape = self.weight.shape  # type: ignore[attr-defined]
        self.register_buffer("weight_q", torch.zeros(shape, dtype=torch.int8))  # type: ignore[attr-defined]

    def _fq_weight(self) -> Tensor:
        w: Tensor = self.weight  # type: ignore[attr-defined]
        with torch.no_grad():
            f = choose_exponent(float(w.abs().max()), self.qbits)
            self.weight_q.copy_(quantize(w, self.qbits, f).to(torch.int8))
        # straight-through: forward uses the rounded weight, gradient goes to the master
        return w + (fake_quantize_dynamic(w.detach(), self.qbits) - w).detach()


class QATLinear(nn.Linear, _QATMixin):
    """nn.Linear with 8-bit fake-quantized weight and input."""

    def forward(self, x: Tensor) -> Tensor:
        """Linear map of the input on its ``qbits`` grid with the fake-quantized weight (STE)."""
        return F.linear(quantize_activation(x, self.qbits), self._fq_weight(), self.bias)


class QATConv1d(nn.Conv1d, _QATMixin):
    """nn.Conv1d with 8-bit fake-quantized weight and input."""

    def forward(self, x: Tensor) -> Tensor:
        """Convolve the input on its ``qbits`` grid with the fake-quantized weight (STE)."""
        return self._conv_forward(quantize_activation(x, self.qbits), self._fq_weight(), self.bias)


class QATConv2d(nn.Conv2d, _QATMixin):
    """nn.Conv2d with 8-bit fake-quantized weight and input."""

    def forward(self, x: Tensor) -> Tensor:
        """Convolve the input on its ``qbits`` grid with the fake-quantized weight (STE)."""
        return self._conv_forward(quantize_activation(x, self.qbits), self._fq_weight(), self.bias)


_SWAP: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: QATLinear,
    nn.Conv1d: QATConv1d,
    nn.Conv2d: QATConv2d,
}


def to_qat(model: nn.Module, bits: int = 8) -> nn.Module:
    """Swap Linear/Conv layers in place for QAT layers sharing their float parameters."""
    for child in list(model.children()):
        cls = _SWAP.get(type(child))
        if cls is None:
            to_qat(child, bits)
            continue
        child.__class__ = cls  # same parameters, QAT forward
        child._init_q(bits)  # type: ignore[operator]
    return model
