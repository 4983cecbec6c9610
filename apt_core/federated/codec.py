"""Models on the wire: fresh transport models, float states, packed arrays."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from apt_core.config import PrecisionPolicy
from apt_core.conversion import to_apt
from apt_core.errors import ReplyError
from apt_core.federated import record_keys as keys
from apt_core.federated.q8 import decode_q8, encode_q8, sub_states
from apt_core.federated.settings import FED_METHODS
from apt_core.packing import PackedTensor, pack_tensors
from apt_core.tasks.networks import build_model
from apt_core.wire import pack, unpack

#: A device's model as the server sees it: packed codes (apt) or a float state.
ReplyModel = list[PackedTensor] | dict[str, Tensor]


def make_model(
    task: str,
    arch: str,
    method: str,
    policy: PrecisionPolicy | None = None,
    seed: int | None = None,
) -> nn.Module:
    """A fresh model in its transport form: APT layers for apt, float for fp32/qat8."""
    if method not in FED_METHODS:
        raise ValueError(f"method={method!r} is not one of {FED_METHODS}.")
    if seed is not None:
        torch.manual_seed(seed)
    model = build_model(task, arch)
    return to_apt(model, policy or PrecisionPolicy()) if method == "apt" else model


def float_state(model: nn.Module) -> dict[str, Tensor]:
    """The float parameters a fp32/qat8 model exchanges (QAT's int8 copies stay local)."""
    return {
        k: v.detach().clone() for k, v in model.state_dict().items() if not k.endswith(".weight_q")
    }


def model_arrays(model: nn.Module, method: str) -> dict[str, np.ndarray]:
    """Transport arrays of a model (what the server sends down).

    One uint8 packed payload for apt, 8-bit weights for fp32-q8 (:mod:`.q8`), else the
    float state.
    """
    if method == "apt":
        return {keys.APT_PAYLOAD: np.frombuffer(pack(model), dtype=np.uint8).copy()}
    if method == "fp32-q8":
        return encode_q8(float_state(model))
    return {k: v.cpu().numpy() for k, v in float_state(model).items()}


def reply_arrays(
    model: nn.Module, method: str, received: Mapping[str, Tensor] | None = None
) -> dict[str, np.ndarray]:
    """What a device uploads after training: its model, or for fp32-q8 its 8-bit update.

    ``received`` is the float state the device started from (required for fp32-q8: the
    update is ``trained - received``).
    """
    if method != "fp32-q8":
        return model_arrays(model, method)
    if received is None:
        raise ValueError("reply_arrays: method 'fp32-q8' needs the received state.")
    return encode_q8(sub_states(float_state(model), received))


def packed_arrays(tensors: list[PackedTensor]) -> dict[str, np.ndarray]:
    """Transport arrays of an apt model given as fixed-point tensors."""
    return {keys.APT_PAYLOAD: np.frombuffer(pack_tensors(tensors), dtype=np.uint8).copy()}


def arrays_nbytes(arrays: Mapping[str, np.ndarray]) -> int:
    """Bytes of the model data in transport arrays (what goes over the link)."""
    return int(sum(np.asarray(a).nbytes for a in arrays.values()))


def load_arrays(model: nn.Module, arrays: Mapping[str, np.ndarray], method: str) -> nn.Module:
    """Write transport arrays into ``model`` (raises PackError / RuntimeError when wrong)."""
    if method == "apt":
        return unpack(model, arrays_payload(arrays))
    if method == "fp32-q8":
        model.load_state_dict(decode_q8(arrays, float_state(model)), strict=True)
        return model
    state = {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}
    model.load_state_dict(state, strict=True)
    return model


def arrays_payload(arrays: Mapping[str, np.ndarray]) -> bytes:
    """The packed apt model carried by transport arrays, as bytes for :func:`unpack`.

    Raises
    ------
    ReplyError
        If ``arrays`` is not exactly one 1-D uint8 array under ``apt-payload``.
    """
    if set(arrays) != {keys.APT_PAYLOAD}:
        raise ReplyError(
            f"The apt model must travel as the single array '{keys.APT_PAYLOAD}'; "
            f"got arrays {sorted(arrays)}."
        )
    a = np.asarray(arrays[keys.APT_PAYLOAD])
    if a.dtype != np.uint8 or a.ndim != 1:
        raise ReplyError(
            f"Array '{keys.APT_PAYLOAD}' must be 1-D uint8; got dtype {a.dtype} "
            f"with shape {list(a.shape)}."
        )
    return a.tobytes()
