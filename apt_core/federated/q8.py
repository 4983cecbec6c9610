"""The ``fp32-q8`` baseline's wire format: float tensors as int8 codes with a per-tensor scale.

``fp32-q8`` is what a bandwidth-minded user would pick without APT: devices train in fp32,
and every tensor that crosses the wire is quantized to 8 bits, symmetric, round to nearest,
with one float32 scale per tensor (``scale = max|t| / 127``, codes in ``[-127, 127]``).

* Downlink: the server's global weights, quantized (devices start from the dequantized
  model; the server keeps its float32 model and the exact dequantized copy it sent).
* Uplink: the device's update, ``w_trained - w_received``, quantized; the server adds
  the dequantized update to the model it sent, so the uplink carries no weight offset.

Transport arrays: one int8 array per float tensor under the tensor's name, plus one
float32 array :data:`SCALES_KEY` holding the scales in the state's key order.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from apt_core.errors import ReplyError

SCALES_KEY = "q8-scales"
Q8_MAX = 127


def quantize_q8(t: Tensor) -> tuple[Tensor, float]:
    """Int8 codes and the scale of one tensor (``t ~= codes * scale``; scale 0 for all zeros)."""
    amax = float(t.detach().abs().max()) if t.numel() else 0.0
    if amax == 0.0:
        return torch.zeros(t.shape, dtype=torch.int8), 0.0
    scale = float(np.float32(amax / Q8_MAX))
    codes = torch.round(t.detach().to(torch.float64) / scale).clamp(-Q8_MAX, Q8_MAX)
    return codes.to(torch.int8), scale


def encode_q8(state: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """Transport arrays of a float state (weights or an update), 8 bits per value."""
    arrays: dict[str, np.ndarray] = {}
    scales = []
    for name, t in state.items():
        codes, scale = quantize_q8(t)
        arrays[name] = codes.numpy()
        scales.append(scale)
    arrays[SCALES_KEY] = np.asarray(scales, dtype=np.float32)
    return arrays


def decode_q8(
    arrays: Mapping[str, np.ndarray], template: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """The float32 state carried by :func:`encode_q8` arrays, checked against ``template``.

    Raises
    ------
    ReplyError
        If the names, dtypes or shapes differ from the template's, or a scale is negative
        or not finite.
    """
    expected = set(template) | {SCALES_KEY}
    if set(arrays) != expected:
        raise ReplyError(
            f"The fp32-q8 arrays do not match the model: missing "
            f"{sorted(expected - set(arrays))}, unexpected {sorted(set(arrays) - expected)}."
        )
    scales = np.asarray(arrays[SCALES_KEY])
    if scales.dtype != np.float32 or scales.shape != (len(template),):
        raise ReplyError(
            f"Array '{SCALES_KEY}' must be float32 of shape [{len(template)}]; got "
            f"{scales.dtype} {list(scales.shape)}."
        )
    if not (np.isfinite(scales).all() and (scales >= 0).all()):
        raise ReplyError(f"Array '{SCALES_KEY}' holds a negative or non-finite scale.")
    out: dict[str, Tensor] = {}
    for (name, ref), scale in zip(template.items(), scales.tolist(), strict=True):
        a = np.asarray(arrays[name])
        if a.dtype != np.int8 or tuple(a.shape) != tuple(ref.shape):
            raise ReplyError(
                f"Tensor '{name}' must be int8 of shape {list(ref.shape)}; got {a.dtype} "
                f"{list(a.shape)}."
            )
        out[name] = (torch.from_numpy(a.astype(np.float32)) * scale).to(ref.dtype)
    return out


def add_states(base: Mapping[str, Tensor], delta: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``base + delta`` tensor by tensor (the keys of ``base``)."""
    return {k: base[k] + delta[k].to(base[k].dtype) for k in base}


def sub_states(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``a - b`` tensor by tensor (the keys of ``a``)."""
    return {k: a[k] - b[k].to(a[k].dtype) for k in a}
