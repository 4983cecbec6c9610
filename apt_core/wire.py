"""Whole-model wire format: every APT layer's codes at exactly its bit-width, one header."""

from __future__ import annotations

from torch import nn

from apt_core.conversion import apt_layers
from apt_core.packing import PackedTensor, PackError, pack_tensors, unpack_tensors


def model_tensors(model: nn.Module) -> list[PackedTensor]:
    """The fixed-point tensors of every APT layer, in module order."""
    out: list[PackedTensor] = []
    for name, layer in apt_layers(model).items():
        out.extend(layer.packed_tensors(name))
    return out


def pack(model: nn.Module) -> bytes:
    """Serialize an APT model: header (shapes, bits, exponents, format version) + codes.

    The payload size is ``header + sum_l ceil(n_l * b_l / 8)``: what a device uploads.
    """
    return pack_tensors(model_tensors(model))


def check_against(model: nn.Module, tensors: list[PackedTensor]) -> None:
    """Raise :class:`PackError` unless ``tensors`` match ``model``'s APT layers exactly.

    Names, order and shapes must all agree.
    """
    layers = apt_layers(model)
    expected = [
        (f"{n}.{w}", tuple(m.weight_shape if w == "weight" else m.bias_shape or ()))
        for n, m in layers.items()
        for w in m.tensors()
    ]
    got = [(t.name, tuple(t.codes.shape)) for t in tensors]
    if len(got) != len(expected):
        raise PackError(f"payload holds {len(got)} tensors; the model has {len(expected)}.")
    for (gname, gshape), (ename, eshape) in zip(got, expected, strict=True):
        if gname != ename:
            raise PackError(f"tensor '{gname}' found where '{ename}' was expected.")
        if gshape != eshape:
            raise PackError(
                f"tensor '{gname}': shape {list(gshape)} does not match the model's {list(eshape)}."
            )


def load_tensors(model: nn.Module, tensors: list[PackedTensor]) -> nn.Module:
    """Write validated fixed-point tensors into ``model``'s APT layers (bits included)."""
    check_against(model, tensors)
    layers = apt_layers(model)
    by_layer: dict[str, dict[str, PackedTensor]] = {}
    for t in tensors:
        lname, _, which = t.name.rpartition(".")
        by_layer.setdefault(lname, {})[which] = t
    for lname, entries in by_layer.items():
        bits = {t.bits for t in entries.values()}
        if len(bits) != 1:
            raise PackError(f"layer '{lname}': weight and bias bits differ ({sorted(bits)}).")
        for which, t in entries.items():
            layers[lname].load_packed(which, t)
    return model


def unpack(model: nn.Module, payload: bytes) -> nn.Module:
    """Restore :func:`pack` output into an APT model of the same architecture, exactly."""
    return load_tensors(model, unpack_tensors(payload))
