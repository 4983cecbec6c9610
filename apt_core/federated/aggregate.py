"""The server's aggregation rule for mixed-precision replies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from apt_core.conversion import apt_layers
from apt_core.federated.codec import ReplyModel, float_state
from apt_core.packing import PackedTensor
from apt_core.quant import dequantize, grid_exponent, quantize
from apt_core.wire import model_tensors


def aggregate(template: nn.Module, replies: Sequence[tuple[ReplyModel, int]]) -> ReplyModel:
    """Example-weighted FedAvg of validated replies.

    apt (replies are lists of :class:`PackedTensor`): each tensor is dequantized
    (``codes * 2**-exponent``) and averaged in float64 with weights ``n_k / sum(n)``. The
    global tensor is then re-quantized with round-to-nearest, where

    * bits of a layer = the **max** over this round's replies of that layer's bits (no
      device's resolution is lost; a device with a narrower policy clamps on arrival);
    * exponent of each tensor = ``grid_exponent(max|w_avg|, bits)``: the finest grid
      whose range still holds the averaged tensor without saturating, at most
      ``MAX_EXPONENT``.

    fp32/qat8 (replies are state dicts): the plain weighted average, in the template's
    dtypes.

    Parameters
    ----------
    template : nn.Module
        A model of the run's architecture and method (names, order, shapes, dtypes).
    replies : Sequence[tuple[list[PackedTensor] | dict[str, Tensor], int]]
        Validated models and their example counts (> 0).

    Returns
    -------
    list[PackedTensor] | dict[str, Tensor]
        The global model, in the replies' form.
    """
    if not replies:
        raise ValueError("aggregate needs at least one reply.")
    total = float(sum(n for _, n in replies))
    if total <= 0:
        raise ValueError(f"the replies hold {total:g} examples in total; need > 0.")
    if isinstance(replies[0][0], dict):
        ref = float_state(template)
        acc = {k: torch.zeros(v.shape, dtype=torch.float64) for k, v in ref.items()}
        for state, n in replies:
            assert isinstance(state, dict)
            for k in acc:
                acc[k] += state[k].to(torch.float64) * (n / total)
        return {k: v.to(ref[k].dtype) for k, v in acc.items()}
    names = [t.name for t in model_tensors(template)]
    avg = {name: torch.zeros(0, dtype=torch.float64) for name in names}
    bits: dict[str, int] = {}
    for tensors, n in replies:
        assert isinstance(tensors, list)
        for t in tensors:
            value = dequantize(t.codes, t.exponent, torch.float64) * (n / total)
            avg[t.name] = value if avg[t.name].numel() == 0 else avg[t.name] + value
            layer = t.name.rpartition(".")[0]
            bits[layer] = max(bits.get(layer, 0), t.bits)
    out = []
    for name in names:
        b = bits[name.rpartition(".")[0]]
        value = avg[name]
        f = grid_exponent(float(value.abs().max()) if value.numel() else 0.0, b)
        out.append(PackedTensor(name, quantize(value, b, f), b, f))
    return out


def global_bits(tensors: list[PackedTensor]) -> dict[str, int]:
    """Bit-width of every layer of a packed model (weight and bias share it)."""
    return {t.name.rpartition(".")[0]: t.bits for t in tensors}


def mean_bits(template: nn.Module, bits: Mapping[str, int]) -> float | None:
    """Parameter-weighted mean of per-layer bits over the template's APT layers."""
    layers = {n: m.numel_params() for n, m in apt_layers(template).items() if n in bits}
    total = sum(layers.values())
    return sum(n * bits[name] for name, n in layers.items()) / total if total else None
