"""Reply validation: a device's model is checked whole before it is aggregated."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from apt_core.config import PrecisionPolicy
from apt_core.errors import ReplyError
from apt_core.federated.codec import ReplyModel, arrays_payload, float_state
from apt_core.federated.q8 import add_states, decode_q8
from apt_core.packing import PackedTensor, PackError, unpack_tensors
from apt_core.quant import dequantize
from apt_core.wire import check_against


def _max_abs_code(t: PackedTensor) -> Tensor:
    """The tensor's largest |code| as a one-element tensor (0 for an empty tensor)."""
    if t.codes.numel() == 0:
        return torch.zeros(1, dtype=torch.int64)
    return t.codes.abs().amax().reshape(1).to(torch.int64)


def validate_packed(
    template: nn.Module, payload: bytes, policy: PrecisionPolicy
) -> list[PackedTensor]:
    """Parse and check a device's packed model against the template and its policy.

    Checks the wire format (magic, version, truncation, trailing bytes), tensor names,
    order and shapes (``wire.check_against``), one bit-width per layer inside
    ``[policy.bits_min, policy.bits_max]``, and finite dequantized values.

    Raises
    ------
    ReplyError
        Naming the first problem found.
    """
    try:
        tensors = unpack_tensors(payload)
        check_against(template, tensors)
    except PackError as exc:
        raise ReplyError(f"The packed model is malformed: {exc}") from None
    lo, hi = policy.bits_min, policy.bits_max
    layer_of: dict[str, int] = {}
    for t in tensors:
        layer = t.name.rpartition(".")[0]
        if layer_of.setdefault(layer, t.bits) != t.bits:
            raise ReplyError(
                f"Layer '{layer}' carries two bit-widths ({layer_of[layer]} and "
                f"{t.bits}); weight and bias must share one."
            )
        if not lo <= t.bits <= hi:
            raise ReplyError(
                f"Tensor '{t.name}' has bits={t.bits}, outside the device "
                f"policy's range [{lo}, {hi}]."
            )
        try:
            # the largest |code| alone decides: scaling by 2**-exponent is monotone, and a
            # scale that overflows float32 makes even a zero code non-finite (inf * 0)
            finite = bool(torch.isfinite(dequantize(_max_abs_code(t), t.exponent)).all())
        except OverflowError:
            finite = False
        if not finite:
            raise ReplyError(
                f"Tensor '{t.name}' has non-finite values after dequantization "
                f"(exponent={t.exponent})."
            )
    return tensors


#: A reply tensor whose largest magnitude exceeds this multiple of the round's global
#: tensor is refused: honest local training does not grow a layer's range that much in
#: one round, while a hostile or corrupt update (huge values, a forged exponent) does.
GROWTH_LIMIT = 64.0


def tensors_max_abs(model: ReplyModel) -> dict[str, float]:
    """Largest magnitude of every tensor of a reply (dequantized for apt)."""
    if isinstance(model, list):
        # exact: a power-of-two scale in float64 keeps the order of the codes
        return {
            t.name: float(dequantize(_max_abs_code(t), t.exponent, torch.float64).max())
            for t in model
        }
    return {k: float(v.abs().max()) for k, v in model.items()}


def check_growth(
    reference: Mapping[str, float], model: ReplyModel, limit: float = GROWTH_LIMIT
) -> None:
    """Refuse a reply whose tensors grew more than ``limit`` times past ``reference``.

    Raises
    ------
    ReplyError
        Naming the tensor, its magnitude and the bound.
    """
    for name, amax in tensors_max_abs(model).items():
        ref = reference.get(name)
        if ref is None:
            continue
        bound = limit * max(ref, 1e-3)
        if amax > bound:
            raise ReplyError(
                f"Tensor '{name}' reaches |w| = {amax:.3g}, more than {limit:g}x "
                f"the global model's {ref:.3g}: refused as a corrupt or hostile "
                "update."
            )


def validate_state(template: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Check a fp32/qat8 state dict: same keys and shapes as the template, all finite.

    Raises
    ------
    ReplyError
        Naming the first offending tensor.
    """
    expected = float_state(template)
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise ReplyError(
            f"The model's tensors do not match: missing {missing}, unexpected {extra}."
        )
    out: dict[str, Tensor] = {}
    for name, ref in expected.items():
        t = state[name]
        if tuple(t.shape) != tuple(ref.shape):
            raise ReplyError(
                f"Tensor '{name}' has shape {list(t.shape)}; the model's is {list(ref.shape)}."
            )
        if not t.is_floating_point():
            raise ReplyError(f"Tensor '{name}' has dtype {t.dtype}; a float is required.")
        if not bool(torch.isfinite(t).all()):
            raise ReplyError(f"Tensor '{name}' holds NaN or Inf values.")
        out[name] = t
    return out


def validate_arrays(
    template: nn.Module,
    arrays: Mapping[str, np.ndarray],
    method: str,
    policy: PrecisionPolicy,
    received: Mapping[str, Tensor] | None = None,
) -> ReplyModel:
    """Validate a reply's transport arrays for ``method``; returns the decoded model.

    fp32-q8 replies carry an 8-bit update: the model is ``received`` (the dequantized
    global model the round sent, required) plus the decoded update.
    """
    if method == "apt":
        return validate_packed(template, arrays_payload(arrays), policy)
    if method == "fp32-q8":
        if received is None:
            raise ValueError("validate_arrays: method 'fp32-q8' needs the received state.")
        update = decode_q8(arrays, float_state(template))
        return validate_state(template, add_states(received, update))
    return validate_state(template, {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
