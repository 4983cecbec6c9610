"""The fp32-q8 wire format: 8-bit weights down, 8-bit updates up."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from apt_core import federated as fed
from apt_core.config import PrecisionPolicy
from apt_core.errors import ReplyError
from apt_core.federated.q8 import SCALES_KEY, decode_q8, encode_q8, quantize_q8


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    return fed.float_state(fed.make_model("digits", "cnn", "fp32-q8", seed=seed))


def test_encode_decode_round_trip_within_half_a_step() -> None:
    # Prepare
    state = _state()
    state["fc.bias"] = torch.zeros_like(state["fc.bias"])  # an all-zero tensor: scale 0

    # Execute
    arrays = encode_q8(state)
    back = decode_q8(arrays, state)

    # Assert: one int8 per value, one float32 scale per tensor, error <= scale / 2
    assert arrays[SCALES_KEY].dtype == np.float32 and arrays[SCALES_KEY].shape == (len(state),)
    for (name, t), scale in zip(state.items(), arrays[SCALES_KEY].tolist(), strict=True):
        assert arrays[name].dtype == np.int8 and arrays[name].shape == tuple(t.shape)
        assert scale == pytest.approx(float(t.abs().max()) / 127, rel=1e-6)
        assert float((back[name] - t).abs().max()) <= scale / 2 + 1e-7
    assert float(back["fc.bias"].abs().max()) == 0.0
    values = sum(t.numel() for t in state.values())
    assert fed.arrays_nbytes(arrays) == values + 4 * len(state)


def test_quantize_q8_extremes_hit_plus_minus_127() -> None:
    # Execute
    codes, scale = quantize_q8(torch.tensor([-2.0, 0.5, 2.0]))

    # Assert
    assert codes.tolist() == [-127, 32, 127] and scale == pytest.approx(2.0 / 127)


def test_reply_is_the_update_and_server_adds_it_to_what_it_sent() -> None:
    # Prepare: the device receives the 8-bit global model, then trains (here: a shift)
    template = fed.make_model("digits", "cnn", "fp32-q8")
    sent = fed.model_arrays(fed.make_model("digits", "cnn", "fp32-q8", seed=1), "fp32-q8")
    device = fed.load_arrays(fed.make_model("digits", "cnn", "fp32-q8"), sent, "fp32-q8")
    received = fed.float_state(device)
    with torch.no_grad():
        device.fc.weight += 0.01

    # Execute
    reply = fed.reply_arrays(device, "fp32-q8", received)
    model = fed.validate_arrays(template, reply, "fp32-q8", PrecisionPolicy(), received)

    # Assert: the update is exact up to its own (small) quantization step
    assert isinstance(model, dict)
    assert torch.allclose(model["fc.weight"], device.fc.weight, atol=1e-4)
    assert torch.equal(model["conv1.weight"], received["conv1.weight"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("fc.bias"), "missing ['fc.bias']"),
        (lambda a: a.__setitem__("fc.bias", a["fc.bias"].astype(np.int16)), "must be int8"),
        (lambda a: a.__setitem__(SCALES_KEY, a[SCALES_KEY] * np.float32(-1)), "negative"),
        (lambda a: a.__setitem__(SCALES_KEY, a[SCALES_KEY][:-1]), "of shape [8]"),
        (lambda a: a.__setitem__("extra", np.zeros(1, np.int8)), "unexpected ['extra']"),
    ],
)
def test_decode_q8_rejects_malformed_arrays(change, message: str) -> None:  # type: ignore[no-untyped-def]
    # Prepare
    state = _state()
    arrays = encode_q8(state)
    change(arrays)

    # Execute / Assert
    with pytest.raises(ReplyError, match=message.replace("[", r"\[").replace("]", r"\]")):
        decode_q8(arrays, state)


def test_fp32_q8_reply_without_received_state_is_refused() -> None:
    # Prepare
    model = fed.make_model("digits", "cnn", "fp32-q8")

    # Execute / Assert
    with pytest.raises(ValueError, match="needs the received state"):
        fed.reply_arrays(model, "fp32-q8")
