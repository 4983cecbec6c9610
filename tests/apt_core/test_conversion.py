"""Tests of the module swaps in apt_core.conversion."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from apt_core.config import PrecisionPolicy
from apt_core.conversion import apt_layers, layer_bits, to_apt, to_float
from apt_core.layers import APTConv1d, APTConv2d, APTLinear
from apt_core.packing import PackedTensor
from apt_core.quant import MAX_EXPONENT, code_range
from tests.utils.fixed_point import ref_quantize
from tests.utils.networks import (
    MixedNet,
    converted_mixed_net,
    disable_act_err_quantization,
    make_mixed_input,
    make_mixed_net,
)
from tests.utils.torch_threads import single_thread

EXPECTED_TYPES = {"conv": APTConv2d, "body.0": APTConv1d, "head": APTLinear}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def test_to_apt_converts_nested_linear_and_conv_layers() -> None:
    # Prepare
    model = make_mixed_net()

    # Execute
    out = to_apt(model, PrecisionPolicy(bits_init=6))

    # Assert
    assert out is model
    assert {n: type(m) for n, m in apt_layers(model).items()} == EXPECTED_TYPES
    leftovers = [
        n for n, m in model.named_modules() if type(m) in (nn.Linear, nn.Conv1d, nn.Conv2d)
    ]
    assert leftovers == []
    assert isinstance(model.body[1], nn.ReLU)
    assert layer_bits(model) == {"conv": 6, "body.0": 6, "head": 6}


@pytest.mark.parametrize(("bits", "act_bits", "atol"), [(8, 8, 2e-2), (16, 16, 2e-4)])
def test_to_apt_output_close_to_float_model(bits: int, act_bits: int, atol: float) -> None:
    # Prepare: outputs are ~0.5 in magnitude; 8-bit weights and activations cost ~1%
    float_model = make_mixed_net(0)
    model = converted_mixed_net(0, PrecisionPolicy(bits_init=bits, act_bits=act_bits))
    x = make_mixed_input(8)

    # Execute
    with torch.no_grad():
        ref = float_model(x)
        out = model.eval()(x)

    # Assert
    torch.testing.assert_close(out, ref, rtol=0, atol=atol)


def test_to_apt_weights_are_float_weights_rounded_to_nearest() -> None:
    # Prepare
    float_model = make_mixed_net(0)
    model = converted_mixed_net(0)

    # Execute
    layers = apt_layers(model)

    # Assert
    for name, layer in layers.items():
        f = layer.exponent("weight")
        ref = float_model.get_submodule(name).weight.detach()
        torch.testing.assert_close(
            layer.codes("weight").long(), ref_quantize(ref, 8, f), rtol=0, atol=0
        )
        assert float(ref.abs().max()) * 2**f <= code_range(8)[1]


def test_to_apt_state_dict_holds_only_integer_tensors() -> None:
    # Prepare
    model = converted_mixed_net()

    # Execute
    state = model.state_dict()

    # Assert
    assert state
    floats = {k: v.dtype for k, v in state.items() if v.is_floating_point() or v.is_complex()}
    assert floats == {}
    assert {v.dtype for v in state.values()} <= {torch.int8, torch.int32}


def test_to_apt_leaves_no_parameters() -> None:
    # Prepare
    model = converted_mixed_net()

    # Execute
    params = list(model.named_parameters())

    # Assert
    assert params == []
    for layer in apt_layers(model).values():
        assert list(layer.parameters()) == []


def test_to_float_gives_plain_torch_layers_with_dequantized_weights() -> None:
    # Prepare
    model = converted_mixed_net(policy=PrecisionPolicy(bits_init=7))

    # Execute
    plain = to_float(model)

    # Assert
    assert isinstance(plain, MixedNet)
    assert type(plain.conv) is nn.Conv2d
    assert type(plain.body[0]) is nn.Conv1d
    assert type(plain.head) is nn.Linear
    assert (
        plain.body[0].stride,
        plain.body[0].padding,
        plain.body[0].dilation,
        plain.body[0].groups,
    ) == ((2,), (1,), (2,), 2)
    for name, layer in apt_layers(model).items():
        w, b = layer.dequantized()
        torch.testing.assert_close(plain.get_submodule(name).weight.detach(), w, rtol=0, atol=0)
        torch.testing.assert_close(plain.get_submodule(name).bias.detach(), b, rtol=0, atol=0)
    # the APT model itself is untouched
    assert {n: type(m) for n, m in apt_layers(model).items()} == EXPECTED_TYPES


def test_to_float_outputs_equal_apt_eval_outputs_without_act_quantization() -> None:
    # Prepare
    model = converted_mixed_net(policy=PrecisionPolicy(bits_init=6))
    disable_act_err_quantization(model)
    plain = to_float(model)
    x = make_mixed_input(8)

    # Execute
    with torch.no_grad():
        out = model.eval()(x)
        ref = plain.eval()(x)

    # Assert
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_to_float_outputs_close_to_apt_outputs_with_8_bit_activations() -> None:
    # Prepare
    model = converted_mixed_net()
    plain = to_float(model)
    x = make_mixed_input(8)

    # Execute
    with torch.no_grad():
        out = model.eval()(x)
        ref = plain.eval()(x)

    # Assert: only the 8-bit activation rounding separates them (~1% of the ~0.5 scale)
    torch.testing.assert_close(out, ref, rtol=0, atol=2e-2)


def _tiny_linear(scale: float) -> nn.Sequential:
    """A Linear layer whose weights are ``k * scale`` for k in -5..6 (bias 1e-3)."""
    model = nn.Sequential(nn.Linear(4, 3))
    with torch.no_grad():
        model[0].weight.copy_((torch.arange(12, dtype=torch.float64) - 5).view(3, 4) * scale)
        model[0].bias.fill_(1e-3)
    return model


@pytest.mark.parametrize("scale", [2.0**-118, 1e-38])
def test_to_apt_tiny_weights_exponent_capped_codes_nearest(scale: float) -> None:
    # Prepare: max |w| wants exponent 122 (finite grid) or 130 (2**f overflows float32)
    float_model = _tiny_linear(scale)
    ref = float_model[0].weight.detach()

    # Execute
    layer = apt_layers(to_apt(float_model, PrecisionPolicy()))["0"]

    # Assert: the cap holds and the codes are the nearest ones on the capped grid
    assert layer.exponent("weight") == MAX_EXPONENT
    codes = layer.codes("weight").long()
    torch.testing.assert_close(codes, ref_quantize(ref, 8, MAX_EXPONENT), rtol=0, atol=0)
    assert codes.abs().max() < code_range(8)[1]  # none saturated
    err = (layer.weight_float().double() - ref.double()).abs().max()
    assert float(err) <= 2.0 ** -(MAX_EXPONENT + 1)


def test_set_bits_at_exponent_cap_keeps_cap_and_values() -> None:
    # Prepare: weights 4k on the capped grid
    layer = apt_layers(to_apt(_tiny_linear(2.0**-118), PrecisionPolicy()))["0"]
    before = layer.weight_float().clone()

    # Execute
    layer.set_bits(12)

    # Assert
    assert layer.exponent("weight") == MAX_EXPONENT and layer.n_bits == 12
    torch.testing.assert_close(layer.weight_float(), before, rtol=0, atol=0)


def test_load_packed_exponent_above_cap_rounds_onto_capped_grid() -> None:
    # Prepare: a payload tensor at exponent MAX + 3 (codes 8k: exactly k on the capped grid)
    layer = apt_layers(to_apt(_tiny_linear(1e-3), PrecisionPolicy()))["0"]
    k = torch.arange(-6, 6, dtype=torch.int32).view(3, 4)
    packed = PackedTensor("0.weight", k * 8, 8, MAX_EXPONENT + 3)

    # Execute
    layer.load_packed("weight", packed)

    # Assert
    assert layer.exponent("weight") == MAX_EXPONENT
    torch.testing.assert_close(layer.codes("weight"), k, rtol=0, atol=0)
