"""Fixed-point layers that own no float weight, and the module swaps to and from them.

An APT layer keeps its weight (and bias) only as bit-packed integer codes in registered
buffers, with an exponent and a bit-width buffer beside them. A float weight exists only
inside one training step: ``forward`` decodes it, autograd fills its gradient, and the
optimizer (the only writer of codes) re-encodes the update and drops the float copy.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from apt_core.config import PrecisionPolicy
from apt_core.packing import PackedTensor, pack_bits, packed_nbytes, unpack_bits
from apt_core.quant import (
    choose_exponent,
    dequantize,
    quantize,
    quantize_activation,
    quantize_error,
)


class APTLayer(nn.Module):
    """Base of the fixed-point GEMM layers: storage, encode/decode and bit changes.

    Buffers (all survive ``state_dict`` and transport): ``weight_codes`` (uint8 bit
    stream, ``bits`` bits per value), ``weight_exp`` (int32), ``bits`` (int32) and, with
    a bias, ``bias_codes`` / ``bias_exp`` (the bias shares the layer's bit-width).
    """

    weight_codes: Tensor
    weight_exp: Tensor
    bits: Tensor
    bias_codes: Tensor | None
    bias_exp: Tensor | None

    def __init__(self, weight: Tensor, bias: Tensor | None, policy: PrecisionPolicy) -> None:
        super().__init__()
        self.weight_shape = tuple(weight.shape)
        self.bias_shape = None if bias is None else tuple(bias.shape)
        self.act_bits = policy.act_bits
        self.err_bits = policy.err_bits
        b = policy.start_bits
        self.register_buffer("bits", torch.tensor(b, dtype=torch.int32))
        self.register_buffer("weight_exp", torch.tensor(0, dtype=torch.int32))
        self.register_buffer("weight_codes", torch.zeros(0, dtype=torch.uint8))
        if bias is None:
            self.bias_codes = None
            self.bias_exp = None
        else:
            self.register_buffer("bias_exp", torch.tensor(0, dtype=torch.int32))
            self.register_buffer("bias_codes", torch.zeros(0, dtype=torch.uint8))
        self._live: dict[str, Tensor] = {}  # float tensors of the current step only
        with torch.no_grad():
            self.encode_from_float(weight.detach().float(),
                                   None if bias is None else bias.detach().float())

    # --- storage ---------------------------------------------------------------------
    @property
    def n_bits(self) -> int:
        """Current bit-width as a Python int."""
        return int(self.bits)

    def numel_params(self) -> int:
        """Number of stored parameters (weight and bias)."""
        n = _numel(self.weight_shape)
        return n + (0 if self.bias_shape is None else _numel(self.bias_shape))

    def codes(self, which: str = "weight") -> Tensor:
        """Decode one tensor's integer codes (int32, real shape)."""
        shape = self.weight_shape if which == "weight" else self.bias_shape
        assert shape is not None
        packed = getattr(self, f"{which}_codes")
        return unpack_bits(packed, self.n_bits, _numel(shape)).view(shape)

    def exponent(self, which: str = "weight") -> int:
        """One tensor's exponent f (step 2**-f)."""
        return int(getattr(self, f"{which}_exp"))

    def store_codes(self, which: str, codes: Tensor, exponent: int) -> None:
        """Write integer codes at the current bit-width (the optimizer's only write path)."""
        setattr(self, f"{which}_codes", pack_bits(codes, self.n_bits))
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
            f = choose_exponent(float(value.abs().max()) if value.numel() else 0.0, b)
            self.store_codes(which, quantize(value, b, f), f)

    def set_bits(self, new_bits: int) -> None:
        """Move to ``new_bits``: one more bit doubles the codes (lossless), one less halves
        them with round-to-nearest (lossy). The representable range is unchanged."""
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
        return [PackedTensor(f"{prefix}.{w}", self.codes(w), self.n_bits, self.exponent(w))
                for w in self.tensors()]

    def load_packed(self, which: str, t: PackedTensor) -> None:
        """Replace one tensor's codes, bit-width and exponent from a wire-format entry."""
        self.bits.fill_(t.bits)
        self.store_codes(which, t.codes, t.exponent)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):  # type: ignore[no-untyped-def]
        # The packed code buffers change size with the bit-width, so adopt them whole
        # instead of copying into the current (possibly differently sized) buffer.
        for name in ("weight_codes", "bias_codes"):
            key = prefix + name
            if key in state_dict and getattr(self, name) is not None:
                setattr(self, name, state_dict[key].detach().clone().to(torch.uint8))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        shape_ok = self.weight_codes.numel() == packed_nbytes(_numel(self.weight_shape),
                                                              self.n_bits)
        if not shape_ok:
            error_msgs.append(f"{prefix}weight_codes: {self.weight_codes.numel()} bytes do not "
                              f"hold {self.weight_shape} at {self.n_bits} bits.")

    # --- compute ---------------------------------------------------------------------
    def live(self, which: str) -> Tensor | None:
        """The float tensor decoded for the current step (with its gradient), if any.

        It and :meth:`live_codes` exist only between ``forward`` and the optimizer step.
        """
        return self._live.get(which)

    def release(self) -> None:
        """Drop the float tensors of the current step."""
        self._live.clear()

    def live_codes(self, which: str) -> Tensor:
        """The integer codes decoded for the current step (int32, real shape)."""
        return self._live[f"{which}_codes"]

    def _decoded(self, which: str) -> Tensor:
        codes = self.codes(which)
        value = dequantize(codes, self.exponent(which))
        if torch.is_grad_enabled() and self.training:
            value.requires_grad_(True)
            self._live[which] = value
            self._live[f"{which}_codes"] = codes
        return value

    def forward(self, x: Tensor) -> Tensor:
        w = self._decoded("weight")
        b = self._decoded("bias") if self.bias_shape is not None else None
        y = self._gemm(quantize_activation(x, self.act_bits), w, b)
        return quantize_error(y, self.err_bits)

    def _gemm(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        raise NotImplementedError

    def dequantized(self) -> tuple[Tensor, Tensor | None]:
        """Float weight and bias (for export and evaluation)."""
        with torch.no_grad():
            w = dequantize(self.codes("weight"), self.exponent("weight"))
            b = None
            if self.bias_shape is not None:
                b = dequantize(self.codes("bias"), self.exponent("bias"))
        return w, b

    def extra_repr(self) -> str:
        return (f"shape={self.weight_shape}, bits={self.n_bits}, "
                f"exponent={self.exponent('weight')}, act_bits={self.act_bits}, "
                f"err_bits={self.err_bits}")


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
            raise ValueError(f"padding_mode={m.padding_mode!r} is not supported by APT layers "
                             "(only 'zeros').")
        layer = cls(m.weight, m.bias, policy)
        layer.conv_args = dict(stride=m.stride, padding=m.padding, dilation=m.dilation,
                               groups=m.groups)
        return layer

    def _gemm(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        return self._conv_fn(x, w, b, **self.conv_args)

    def to_float(self) -> nn.Module:
        """A plain float copy of this layer."""
        out_c, in_per_group, *k = self.weight_shape
        groups = self.conv_args["groups"]
        m = self._float_cls(in_per_group * groups, out_c, tuple(k),
                            bias=self.bias_shape is not None, **self.conv_args)
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


_SWAP: dict[type[nn.Module], type[APTLayer]] = {
    nn.Linear: APTLinear, nn.Conv1d: APTConv1d, nn.Conv2d: APTConv2d}


def to_apt(model: nn.Module, policy: PrecisionPolicy | None = None) -> nn.Module:
    """Replace every Linear/Conv1d/Conv2d of ``model`` in place by its APT layer.

    Parameters
    ----------
    model : nn.Module
        Any module tree; other layers are left as they are (and stay float).
    policy : PrecisionPolicy | None (default: None -> PrecisionPolicy())
        Start bit-width and activation/error bits of the new layers.

    Returns
    -------
    nn.Module
        ``model`` itself.
    """
    policy = policy or PrecisionPolicy()
    for name, child in list(model.named_children()):
        cls = _SWAP.get(type(child))
        if cls is not None:
            setattr(model, name, cls.from_float(child, policy))  # type: ignore[attr-defined]
        else:
            to_apt(child, policy)
    return model


def to_float(model: nn.Module) -> nn.Module:
    """A float deep copy of ``model`` with every APT layer swapped back to its torch type."""
    out = copy.deepcopy(model)
    _swap_back(out)
    return out


def _swap_back(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, APTLayer):
            setattr(module, name, child.to_float())  # type: ignore[operator]
        else:
            _swap_back(child)


def apt_layers(model: nn.Module) -> dict[str, APTLayer]:
    """Every APT layer of ``model`` by qualified name, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, APTLayer)}


def layer_bits(model: nn.Module) -> dict[str, int]:
    """Current bit-width of every APT layer."""
    return {n: m.n_bits for n, m in apt_layers(model).items()}


def _numel(shape: tuple[int, ...] | None) -> int:
    n = 1
    for d in shape or ():
        n *= d
    return n


def _copy_into(m: nn.Module, w: Tensor, b: Tensor | None) -> None:
    with torch.no_grad():
        m.weight.copy_(w)  # type: ignore[operator]
        if b is not None:
            m.bias.copy_(b)  # type: ignore[union-attr, operator]
