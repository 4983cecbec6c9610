"""Fixed-point layers that own no float weight (swapped in by :mod:`apt_core.conversion`).

An APT layer keeps its weight (and bias) only as integer codes in registered int8
buffers, GEMM-ready (see :mod:`apt_core.kernels.storage`: one int8 per code up to 8 bits,
two int8 limbs from 9 to 16 bits), with an exponent and a bit-width buffer beside them.
On the integer backend (default) the forward and both backward GEMMs run on these codes
and the weight gradient is handed to the optimizer as an exact integer accumulator; on
the reference backend a float weight is decoded for the step and autograd fills its
gradient (the float emulation every integer result is tested against).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from apt_core.config import PrecisionPolicy
from apt_core.kernels import conv1d, conv_geometry
from apt_core.kernels.backend import get_backend, log_once
from apt_core.kernels.conv import ConvProducts
from apt_core.kernels.functions import LinearProducts, Products, int_gemm
from apt_core.kernels.matmul import int_conv_unsupported
from apt_core.kernels.step_state import StepState
from apt_core.kernels.storage import decode, decode_float, encode, stored_rows
from apt_core.packing import PackedTensor
from apt_core.quant import (
    cap_exponent,
    dequantize,
    grid_exponent,
    quantize,
    quantize_activation,
    quantize_error,
)

#: Buffer names of each stored tensor's codes and exponent.
_CODES = {"weight": "weight_codes", "bias": "bias_codes"}
_EXPS = {"weight": "weight_exp", "bias": "bias_exp"}


class APTLayer(StepState, nn.Module):
    """Base of the fixed-point GEMM layers: storage, encode/decode and bit changes.

    Buffers (all survive ``state_dict`` and transport): ``weight_codes`` (int8 matrix of
    ``(out, fan_in)`` codes, or ``(2*out, fan_in)`` limbs above 8 bits), ``weight_exp``
    (int32), ``bits`` (int32) and, with a bias, ``bias_codes`` / ``bias_exp`` (the bias
    shares the layer's bit-width). ``fallbacks`` counts forwards that could not run on
    the integer backend.
    """

    weight_codes: Tensor
    weight_exp: Tensor
    bits: Tensor
    bias_codes: Tensor | None
    bias_exp: Tensor | None
    products: Products = LinearProducts()

    def __init__(self, weight: Tensor, bias: Tensor | None, policy: PrecisionPolicy) -> None:
        super().__init__()
        self.weight_shape = tuple(weight.shape)
        self.bias_shape = None if bias is None else tuple(bias.shape)
        self.act_bits = policy.act_bits
        self.err_bits = policy.err_bits
        self.fallbacks = 0
        b = policy.start_bits
        self.register_buffer("bits", torch.tensor(b, dtype=torch.int32))
        self.register_buffer("weight_exp", torch.tensor(0, dtype=torch.int32))
        self.register_buffer("weight_codes", torch.zeros(0, dtype=torch.int8))
        if bias is None:
            self.bias_codes = None
            self.bias_exp = None
        else:
            self.register_buffer("bias_exp", torch.tensor(0, dtype=torch.int32))
            self.register_buffer("bias_codes", torch.zeros(0, dtype=torch.int8))
        self._init_step_state()
        with torch.no_grad():
            self.encode_from_float(
                weight.detach().float(), None if bias is None else bias.detach().float()
            )

    # --- storage ---------------------------------------------------------------------
    @property
    def n_bits(self) -> int:
        """Current bit-width as a Python int."""
        return int(self._buffers["bits"])  # type: ignore[arg-type]

    def numel_params(self) -> int:
        """Number of stored parameters (weight and bias)."""
        n = math.prod(self.weight_shape)
        return n + (0 if self.bias_shape is None else math.prod(self.bias_shape))

    def _shape(self, which: str) -> tuple[int, ...]:
        shape = self.weight_shape if which == "weight" else self.bias_shape
        assert shape is not None
        return shape

    def to_matrix(self, which: str, t: Tensor) -> Tensor:
        """A real-shape tensor in the stored ``(out, fan_in)`` order."""
        return t.reshape(t.shape[0], -1)

    def from_matrix(self, which: str, m: Tensor) -> Tensor:
        """Inverse of :meth:`to_matrix`."""
        return m.reshape(self._shape(which))

    def stored(self, which: str) -> Tensor:
        """The stored int8 matrix of one tensor (codes or limbs)."""
        # the registered buffer without Module.__getattr__'s lookup (a hot path)
        stored = self._buffers.get(_CODES[which])
        return stored if stored is not None else getattr(self, _CODES[which])  # type: ignore[no-any-return]

    def codes(self, which: str = "weight") -> Tensor:
        """Decode one tensor's integer codes (int32, real shape)."""
        return self.from_matrix(which, decode(self.stored(which), self.n_bits))

    def exponent(self, which: str = "weight") -> int:
        """One tensor's exponent f (step 2**-f)."""
        return int(self._buffers[_EXPS[which]])  # type: ignore[arg-type]

    def store_codes(self, which: str, codes: Tensor, exponent: int) -> None:
        """Write integer codes at the current bit-width (the optimizer's only write path).

        An exponent above :data:`~apt_core.quant.MAX_EXPONENT` (from a payload or a
        bit-width increase) is capped, the codes rounded onto that grid.
        """
        codes, exponent = cap_exponent(codes, self.n_bits, exponent)
        self.set_stored(which, encode(self.to_matrix(which, codes), self.n_bits), exponent)

    def set_stored(self, which: str, stored: Tensor, exponent: int) -> None:
        """Adopt an already encoded int8 matrix (the fused optimizer's write path)."""
        name = f"{which}_codes"
        if name in self._buffers:  # the registered buffer, without Module.__setattr__'s checks
            self._buffers[name] = stored
        else:
            setattr(self, name, stored)
        getattr(self, f"{which}_exp").fill_(exponent)

    def tensors(self) -> Iterator[str]:
        """Names of the stored tensors: "weight" and, if present, "bias"."""
        yield "weight"
        if self.bias_shape is not None:
            yield "bias"

    def encode_from_float(self, weight: Tensor, bias: Tensor | None) -> None:
        """Round float values onto a fresh grid sized to their range (round to nearest)."""
        b = self.n_bits
        for which, value in (("weight", weight), ("bias", bias)):
            if value is None:
                continue
            f = grid_exponent(float(value.abs().max()) if value.numel() else 0.0, b)
            self.store_codes(which, quantize(value, b, f), f)

    def set_bits(self, new_bits: int) -> None:
        """Move to ``new_bits`` and keep the representable range.

        One more bit doubles the codes (lossless); one less halves them with round-to-nearest
        (lossy).
        """
        old = self.n_bits
        if new_bits == old:
            return
        decoded = {w: (self.codes(w), self.exponent(w)) for w in self.tensors()}
        self.bits.fill_(new_bits)
        shift = new_bits - old
        for which, (codes, f) in decoded.items():
            if shift > 0:
                new_codes = codes * (1 << shift)
            else:
                new_codes = quantize(codes.double(), new_bits, shift)
            self.store_codes(which, new_codes, f + shift)

    def packed_tensors(self, prefix: str) -> list[PackedTensor]:
        """Codes of every stored tensor, for the model wire format."""
        return [
            PackedTensor(f"{prefix}.{w}", self.codes(w), self.n_bits, self.exponent(w))
            for w in self.tensors()
        ]

    def load_packed(self, which: str, t: PackedTensor) -> None:
        """Replace one tensor's codes, bit-width and exponent from a wire-format entry."""
        if t.bits != self.n_bits and self.bits_fit():
            self.set_bits(t.bits)  # keeps the other tensor's storage consistent
        self.bits.fill_(t.bits)
        self.store_codes(which, t.codes, t.exponent)

    def bits_fit(self) -> bool:
        """True when the stored matrices are consistent with the current bit-width."""
        return all(
            self.stored(w).shape[0] == stored_rows(self._shape(w)[0], self.n_bits)
            for w in self.tensors()
        )

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):  # type: ignore[no-untyped-def]
        # The code matrices change shape with the bit-width (limbs above 8 bits), so
        # adopt them whole instead of copying into the current buffers.
        for name in ("weight_codes", "bias_codes"):
            key = prefix + name
            if key in state_dict and getattr(self, name) is not None:
                setattr(self, name, state_dict[key].detach().clone().to(torch.int8))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        for which in self.tensors():
            rows = stored_rows(self._shape(which)[0], self.n_bits)
            cols = math.prod(self._shape(which)) // self._shape(which)[0]
            got = tuple(self.stored(which).shape)
            if got != (rows, cols):
                error_msgs.append(
                    f"{prefix}{which}_codes: shape {got} does not hold "
                    f"{self._shape(which)} at {self.n_bits} bits (expected "
                    f"{(rows, cols)})."
                )

    # --- compute ---------------------------------------------------------------------
    def weight_float(self) -> Tensor:
        """The float weight (real shape), as a transient."""
        return dequantize(self.codes("weight"), self.exponent("weight"))

    def bias_float(self) -> Tensor | None:
        """The float bias, as a transient (None without a bias)."""
        if self.bias_shape is None or self.bias_codes is None or self.bias_exp is None:
            return None
        return decode_float(self.bias_codes, self.n_bits, int(self.bias_exp)).view(self.bias_shape)

    def int_unsupported(self, x: Tensor) -> str | None:
        """Why this call cannot run on the integer backend (None when it can)."""
        if not 0 < self.act_bits <= 8 or not 0 < self.err_bits <= 8:
            return "act_bits/err_bits outside 1..8"
        if x.dtype != torch.float32:
            return f"input dtype {x.dtype}"
        return None

    def forward(self, x: Tensor) -> Tensor:
        """Fixed-point ``x -> y``: integer GEMMs on the int backend, else float emulation.

        Either way the input is rounded onto its ``act_bits`` grid and the error on its
        way back onto its ``err_bits`` grid. A call the int backend cannot take (see
        :meth:`int_unsupported`, or a non-finite input) falls back to the emulation.
        """
        if get_backend() == "int":
            reason = self.int_unsupported(x)
            track = torch.is_grad_enabled() and self.training
            y = int_gemm(x, self, self.products, track) if reason is None else None
            if y is not None:
                self._stepping = self._stepping or track
                return y
            self.fallbacks += 1
            reason = reason or "non-finite input"
            log_once(
                reason,
                "APT layer %s falls back to the float emulation: %s.",
                type(self).__name__,
                reason,
            )
        w = self._decoded("weight")
        b = self._decoded("bias") if self.bias_shape is not None else None
        y = self._gemm(quantize_activation(x, self.act_bits), w, b)
        return quantize_error(y, self.err_bits)

    def _gemm(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        raise NotImplementedError

    def dequantized(self) -> tuple[Tensor, Tensor | None]:
        """Float weight and bias (for export and evaluation)."""
        with torch.no_grad():
            return self.weight_float(), self.bias_float()

    def extra_repr(self) -> str:
        """Shape, bits and exponent of the weight, and the activation and error bits."""
        return (
            f"shape={self.weight_shape}, bits={self.n_bits}, "
            f"exponent={self.exponent('weight')}, act_bits={self.act_bits}, "
            f"err_bits={self.err_bits}"
        )


class APTLinear(APTLayer):
    """Fixed-point replacement for :class:`torch.nn.Linear`."""

    @classmethod
    def from_float(cls, m: nn.Linear, policy: PrecisionPolicy) -> APTLinear:
        """Convert a float layer (its weights are rounded onto the start grid)."""
        return cls(m.weight, m.bias, policy)

    def _gemm(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        return F.linear(x, w, b)

    def to_float(self) -> nn.Linear:
        """A plain float copy of this layer."""
        out, inp = self.weight_shape
        m = nn.Linear(inp, out, bias=self.bias_shape is not None)
        _copy_into(m, *self.dequantized())
        return m


class _APTConv(APTLayer):
    _conv_fn = staticmethod(F.conv2d)
    _float_cls: type[nn.Module] = nn.Conv2d
    conv_args: dict[str, Any]

    @classmethod
    def from_float(cls, m: nn.Conv1d | nn.Conv2d, policy: PrecisionPolicy) -> _APTConv:
        """Convert a float layer (its weights are rounded onto the start grid)."""
        if m.padding_mode != "zeros":
            raise ValueError(
                f"padding_mode={m.padding_mode!r} is not supported by APT layers (only 'zeros')."
            )
        layer = cls(m.weight, m.bias, policy)
        layer.conv_args = dict(
            stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups
        )
        layer.products = ConvProducts(layer.weight_shape, layer.conv_args)
        return layer

    def to_matrix(self, which: str, t: Tensor) -> Tensor:
        if which == "bias":
            return t.reshape(-1, 1)
        return conv_geometry.weight_matrix(t)

    def from_matrix(self, which: str, m: Tensor) -> Tensor:
        if which == "bias":
            return m.reshape(self._shape(which))
        out_c, in_c, *k = self.weight_shape
        if len(k) == 1:
            w = conv1d.weight_from_matrix1d(m, in_c, k[0])
        else:
            w = conv_geometry.weight_from_matrix(m, in_c, k[0], k[1])
        # plain row-major strides: size-1 dims can leave channels_last-looking strides,
        # which steer torch's float conv to another kernel (different rounding)
        return torch.empty(w.shape, dtype=w.dtype).copy_(w)

    def int_unsupported(self, x: Tensor) -> str | None:
        if self.conv_args["groups"] != 1:
            return "groups != 1"
        if x.dim() != len(self.weight_shape):
            return f"{x.dim()}-d input to a {len(self.weight_shape) - 2}-d convolution"
        return int_conv_unsupported() or super().int_unsupported(x)

    def _gemm(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        return self._conv_fn(x, w, b, **self.conv_args)

    def to_float(self) -> nn.Module:
        """A plain float copy of this layer."""
        out_c, in_per_group, *k = self.weight_shape
        groups = self.conv_args["groups"]
        m = self._float_cls(
            in_per_group * groups,
            out_c,
            tuple(k),
            bias=self.bias_shape is not None,
            **self.conv_args,
        )
        _copy_into(m, *self.dequantized())
        return m


class APTConv1d(_APTConv):
    """Fixed-point replacement for :class:`torch.nn.Conv1d`."""

    _conv_fn = staticmethod(F.conv1d)
    _float_cls = nn.Conv1d


class APTConv2d(_APTConv):
    """Fixed-point replacement for :class:`torch.nn.Conv2d`."""

    _conv_fn = staticmethod(F.conv2d)
    _float_cls = nn.Conv2d


def _copy_into(m: nn.Module, w: Tensor, b: Tensor | None) -> None:
    with torch.no_grad():
        m.weight.copy_(w)  # type: ignore[operator]
        if b is not None:
            m.bias.copy_(b)  # type: ignore[union-attr, operator]
