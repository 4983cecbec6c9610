"""Tests of the fixed-point layers in apt_core.layers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from apt_core.config import PrecisionPolicy
from apt_core.conversion import apt_layers, layer_bits, to_apt, to_float
from apt_core.layers import APTLayer
from tests.utils.fixed_point import ref_quantize
from tests.utils.networks import (
    converted_mixed_net,
    disable_act_err_quantization,
    make_mixed_input,
)
from tests.utils.torch_threads import single_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.mark.parametrize("bias", [True, False])
def test_apt_layer_registers_code_exponent_and_bits_buffers(bias: bool) -> None:
    # Prepare
    model = converted_mixed_net(bias=bias)

    # Execute
    buffers = {n: b for n, b in apt_layers(model)["head"].named_buffers()}

    # Assert
    expected = {"bits", "weight_exp", "weight_codes"} | (
        {"bias_exp", "bias_codes"} if bias else set()
    )
    assert set(buffers) == expected
    assert buffers["bits"].dtype == torch.int32 and int(buffers["bits"]) == 8
    assert buffers["weight_exp"].dtype == torch.int32
    assert buffers["weight_codes"].dtype == torch.int8
    # 8 bits: one byte per code, GEMM-ready (out, in) matrix
    assert tuple(buffers["weight_codes"].shape) == (5, 6 * 17)


@pytest.mark.parametrize("step", [1, 3])
def test_set_bits_increase_is_lossless(step: int) -> None:
    # Prepare
    model = converted_mixed_net(policy=PrecisionPolicy(bits_init=6))
    before = {n: (m.dequantized(), m.exponent()) for n, m in apt_layers(model).items()}

    # Execute
    for layer in apt_layers(model).values():
        layer.set_bits(6 + step)

    # Assert
    for name, layer in apt_layers(model).items():
        (w0, b0), f0 = before[name]
        w1, b1 = layer.dequantized()
        assert layer.n_bits == 6 + step
        assert layer.exponent() == f0 + step
        torch.testing.assert_close(w1, w0, rtol=0, atol=0)
        torch.testing.assert_close(b1, b0, rtol=0, atol=0)


def test_set_bits_increase_past_8_bits_switches_to_two_int8_limbs() -> None:
    # Prepare
    layer = apt_layers(converted_mixed_net(policy=PrecisionPolicy(bits_init=6)))["head"]
    before = layer.codes()

    # Execute
    layer.set_bits(11)

    # Assert: high limbs stacked above low limbs along the output dim (2 bytes per code)
    assert layer.weight_codes.dtype == torch.int8
    assert tuple(layer.weight_codes.shape) == (2 * 5, 6 * 17)
    assert layer.bias_codes is not None and tuple(layer.bias_codes.shape) == (2 * 5, 1)
    hi, lo = layer.weight_codes.int().chunk(2)
    torch.testing.assert_close(hi * 256 + lo + 128, before * 32, rtol=0, atol=0)
    torch.testing.assert_close(layer.codes(), before * 32, rtol=0, atol=0)


def test_set_bits_decrease_moves_values_by_at_most_one_new_step() -> None:
    # Prepare
    model = converted_mixed_net(policy=PrecisionPolicy(bits_init=8))
    before = {n: (m.codes(), m.exponent()) for n, m in apt_layers(model).items()}

    # Execute
    for layer in apt_layers(model).values():
        layer.set_bits(7)

    # Assert
    for name, layer in apt_layers(model).items():
        codes0, f0 = before[name]
        w0 = codes0.double() * 2.0**-f0
        new_step = 2.0 ** -(f0 - 1)
        assert layer.n_bits == 7 and layer.exponent() == f0 - 1
        # reference: halve the codes, round half to even, saturate at the 7-bit range
        torch.testing.assert_close(
            layer.codes().long(), ref_quantize(codes0.double() / 2, 7, 0), rtol=0, atol=0
        )
        w1 = layer.dequantized()[0].double()
        assert float((w1 - w0).abs().max()) <= new_step
        assert float((w1 - w0).abs().max()) > 0  # the decrease is lossy here


def test_set_bits_same_width_is_a_no_op() -> None:
    # Prepare
    layer = apt_layers(converted_mixed_net())["conv"]
    codes = layer.weight_codes.clone()

    # Execute
    layer.set_bits(8)

    # Assert
    assert torch.equal(layer.weight_codes, codes) and layer.n_bits == 8


def test_load_state_dict_round_trip_with_different_bits() -> None:
    # Prepare: source layers at 5, 8 and 11 bits; target built at 6 bits from other weights
    source = converted_mixed_net(0)
    widths = {"conv": 5, "body.0": 8, "head": 11}
    for name, layer in apt_layers(source).items():
        layer.set_bits(widths[name])
    target = converted_mixed_net(1, PrecisionPolicy(bits_init=6))
    x = make_mixed_input(4)

    # Execute
    result = target.load_state_dict(source.state_dict())

    # Assert
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert layer_bits(target) == widths
    for name, layer in apt_layers(target).items():
        src = apt_layers(source)[name]
        assert layer.exponent() == src.exponent()
        assert layer.exponent("bias") == src.exponent("bias")
        torch.testing.assert_close(layer.codes(), src.codes(), rtol=0, atol=0)
        torch.testing.assert_close(layer.codes("bias"), src.codes("bias"), rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(target.eval()(x), source.eval()(x), rtol=0, atol=0)
    target_state = target.state_dict()
    for key, value in source.state_dict().items():
        assert torch.equal(target_state[key], value), key


def test_load_state_dict_codes_inconsistent_with_bits_raises() -> None:
    # Prepare: claim 12 bits while the packed weight still holds 8-bit codes
    state = converted_mixed_net(0).state_dict()
    state["head.bits"] = torch.tensor(12, dtype=torch.int32)
    target = converted_mixed_net(1)

    # Execute / Assert
    with pytest.raises(RuntimeError, match="head.weight_codes: .* at 12 bits"):
        target.load_state_dict(state)


def test_apt_layer_gradient_flows_through_ste_to_decoded_weight() -> None:
    # Prepare
    model = converted_mixed_net().train()
    x = make_mixed_input(4)

    # Execute
    model(x).pow(2).sum().backward()

    # Assert
    for name, layer in apt_layers(model).items():
        w, b = layer.live("weight"), layer.live("bias")
        assert w is not None and w.grad is not None, name
        assert b is not None and b.grad is not None, name
        assert w.dtype == torch.float32 and tuple(w.shape) == layer.weight_shape
        assert float(w.grad.abs().sum()) > 0, name


def test_apt_layer_gradient_matches_float_layer_without_quantization() -> None:
    # Prepare
    model = converted_mixed_net().train()
    disable_act_err_quantization(model)
    plain = to_float(model).train()
    x = make_mixed_input(4)

    # Execute
    model(x).pow(2).sum().backward()
    plain(x).pow(2).sum().backward()

    # Assert
    for name, layer in apt_layers(model).items():
        ref = plain.get_submodule(name)
        torch.testing.assert_close(layer.live("weight").grad, ref.weight.grad)
        torch.testing.assert_close(layer.live("bias").grad, ref.bias.grad)


def test_apt_layer_keeps_float_weight_only_inside_a_training_step() -> None:
    # Prepare
    model = converted_mixed_net()
    layers = apt_layers(model).values()
    x = make_mixed_input(2)

    # Execute
    model.eval()(x)
    live_eval = [m.live("weight") for m in layers]
    with torch.no_grad():
        model.train()(x)
    live_no_grad = [m.live("weight") for m in layers]
    model.train()(x)
    live_train = [m.live("weight") for m in layers]
    for m in layers:
        m.release()
    live_released = [m.live("weight") for m in layers]

    # Assert
    assert live_eval == [None, None, None]
    assert live_no_grad == [None, None, None]
    assert all(w is not None and w.requires_grad for w in live_train)
    assert live_released == [None, None, None]


def test_extra_repr_shows_bits_and_exponent() -> None:
    # Prepare
    layer = apt_layers(converted_mixed_net())["head"]
    f = layer.exponent()

    # Execute
    layer.set_bits(10)
    text = repr(layer)

    # Assert
    assert text.startswith("APTLinear(")
    assert "bits=10" in text
    assert f"exponent={f + 2}" in text


def test_apt_conv_rejects_non_zero_padding_mode() -> None:
    # Prepare
    model = nn.Sequential(nn.Conv1d(2, 2, 3, padding=1, padding_mode="reflect"))

    # Execute / Assert
    with pytest.raises(ValueError, match="padding_mode='reflect'"):
        to_apt(model)


def test_apt_layer_numel_params_counts_weight_and_bias() -> None:
    # Prepare
    layers = apt_layers(converted_mixed_net())

    # Execute
    counts = {n: m.numel_params() for n, m in layers.items()}

    # Assert
    assert all(isinstance(m, APTLayer) for m in layers.values())
    assert counts == {"conv": 4 * 1 * 3 * 3 + 4, "body.0": 6 * 2 * 3 + 6, "head": 5 * 102 + 5}
