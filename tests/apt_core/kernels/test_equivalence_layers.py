"""The integer backend's layer GEMMs against the float emulation (the reference backend).

Every test builds one APT layer, copies it, runs the copy on each backend with the same
input and upstream gradient, and compares outputs, input gradients and weight/bias
gradients. Where the reference's float32 GEMM is exact (all products are exact and the
sum of their magnitudes stays below 2**24 grid units) the backends must agree bit for
bit; elsewhere within :func:`tests.utils.backends.fp32_sum_bound`.
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import grad as nn_grad

from apt_core.config import PrecisionPolicy
from apt_core.conversion import apt_layers, to_apt, to_float
from apt_core.kernels.activations import APTMaxPool2d, APTReLU
from apt_core.layers import APTConv1d, APTConv2d, APTLayer, APTLinear
from tests.utils.backends import (
    assert_within,
    backend,
    eager_kernels,
    fixed_policy_at,
    fp32_sum_bound,
    make_all_layers_net,
    make_batch,
    twin_models,
)
from tests.utils.fixed_point import ref_exponent, ref_quantize
from tests.utils.torch_threads import single_thread

BITS = list(range(2, 17))

#: Every (bits, kernel) pair, each with one (stride, padding, dilation, bias) taken in
#: rotation so that all 16 of those combinations occur at several bit widths (the full
#: product, 720 cases per layer type, costs ~10x the time and finds nothing more).
_GEOMETRY = list(itertools.product((1, 2), (0, 1), (1, 2), (True, False)))
CONV_CASES = [
    (b, k, *_GEOMETRY[(3 * b + i) % len(_GEOMETRY)]) for b in BITS for i, k in enumerate((1, 3, 5))
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread_eager() -> Iterator[None]:
    with single_thread(), eager_kernels():
        yield


def _randn(*shape: int, seed: int) -> Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _grid(t: Tensor, bits: int) -> tuple[Tensor, int]:
    """Codes (float64) and exponent of ``t`` on its dynamic ``bits`` grid.

    This is how the reference quantizes activations and errors.
    """
    f = ref_exponent(float(t.abs().max()), bits)
    return ref_quantize(t, bits, f).double(), f


def _run(layer: APTLayer, name: str, x: Tensor, gy: Tensor) -> dict[str, Tensor]:
    """Output, input gradient and weight/bias gradients of one training step."""
    with backend(name):
        layer.train()
        xr = x.clone().requires_grad_(True)
        y = layer(xr)
        y.backward(gy)
        out = {"y": y.detach(), "dx": xr.grad}
        for which in layer.tensors():
            live = layer.live(which)
            assert live is not None and live.grad is not None, f"no {which} gradient on {name}"
            out[f"d{which}"] = live.grad.detach().clone()
        layer.release()
    return out


def _check(
    layer: APTLayer, x: Tensor, gy: Tensor, conv: dict[str, object] | None, what: str
) -> int:
    """Run ``layer`` on both backends and compare within the float32 sum bounds.

    Returns the number of output elements where the reference may round (bound > 0).
    """
    ref = _run(copy.deepcopy(layer), "reference", x, gy)
    got = _run(copy.deepcopy(layer), "int", x, gy)
    assert layer.fallbacks == 0
    qx, fx = _grid(x, layer.act_bits)
    qg, fe = _grid(gy, layer.err_bits)
    qw, fw = layer.codes("weight").double().abs(), layer.exponent("weight")
    qx, qg = qx.abs(), qg.abs()
    if conv is None:  # linear: sums over in_features, out_features, batch
        fwd = F.linear(qx, qw)
        back = qg @ qw
        wgrad = qg.reshape(-1, qg.shape[-1]).t() @ qx.reshape(-1, qx.shape[-1])
        terms = (qw.shape[1], qw.shape[0], qx[..., 0].numel())
    else:
        one_d = qw.dim() == 3
        fn = F.conv1d if one_d else F.conv2d
        gi = nn_grad.conv1d_input if one_d else nn_grad.conv2d_input
        gw = nn_grad.conv1d_weight if one_d else nn_grad.conv2d_weight
        fwd = fn(qx, qw, **conv)  # type: ignore[arg-type]
        back = gi(qx.shape, qw, qg, **conv)  # type: ignore[arg-type]
        wgrad = gw(qx, qw.shape, qg, **conv)  # type: ignore[arg-type]
        kernel = qw[0, 0].numel()
        terms = (qw[0].numel(), qw.shape[0] * kernel, qg.shape[0] * qg[0, 0].numel())
    f_prod = fx + fw
    fwd_sum, unit = fwd * 2.0**-f_prod, 2.0**-f_prod
    if layer.bias_shape is not None:
        qb, fb = layer.codes("bias").double().abs(), layer.exponent("bias")
        view = (-1,) if conv is None else (-1,) + (1,) * (fwd.dim() - 2)
        fwd_sum = fwd_sum + (qb * 2.0**-fb).view(view)
        unit = 2.0 ** -max(f_prod, fb)
        channel = qg.dim() - 1 if conv is None else 1
        bias_sum = qg.sum([d for d in range(qg.dim()) if d != channel]) * 2.0**-fe
        assert_within(
            got["dbias"],
            ref["dbias"],
            fp32_sum_bound(bias_sum, terms[2], 2.0**-fe),
            f"{what} bias grad",
        )
    fwd_bound = fp32_sum_bound(fwd_sum, terms[0] + 1, unit)
    assert_within(got["y"], ref["y"], fwd_bound, f"{what} output")
    assert_within(
        got["dx"],
        ref["dx"],
        fp32_sum_bound(back * 2.0 ** -(fe + fw), terms[1], 2.0 ** -(fe + fw)),
        f"{what} input grad",
    )
    assert_within(
        got["dweight"],
        ref["dweight"],
        fp32_sum_bound(wgrad * 2.0 ** -(fe + fx), terms[2], 2.0 ** -(fe + fx)),
        f"{what} weight grad",
    )
    return int((fwd_bound > 0).sum())


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("bias", [True, False])
def test_apt_linear_int_matches_reference(bits: int, bias: bool) -> None:
    # Prepare: fan-in 24, 7 outputs, batch 5 (and a 3-d input: leading dims flattened)
    torch.manual_seed(bits)
    layer = APTLinear.from_float(
        nn.Linear(24, 7, bias=bias), PrecisionPolicy(bits_min=2, bits_max=16, bits_init=bits)
    )

    # Execute / Assert
    for shape in ((5, 24), (2, 3, 24)):
        x, gy = _randn(*shape, seed=bits), _randn(*shape[:-1], 7, seed=100 + bits)
        _check(layer, x, gy, None, f"linear {bits} bits, input {shape}")


@pytest.mark.parametrize("bits", [14, 16])
def test_apt_linear_int_within_fp32_bound_past_2_24(bits: int) -> None:
    # Prepare: fan-in 512 with 8-bit activations pushes sum |q_x q_w| past 2**24 units
    torch.manual_seed(bits)
    layer = APTLinear.from_float(
        nn.Linear(512, 16), PrecisionPolicy(bits_min=2, bits_max=16, bits_init=bits)
    )
    x, gy = _randn(8, 512, seed=bits).abs(), _randn(8, 16, seed=bits + 1)

    # Execute
    rounding = _check(layer, x, gy, None, f"linear 512 -> 16 at {bits} bits")

    # Assert: the bounded (not bit-exact) regime was really exercised
    assert rounding > 0


@pytest.mark.parametrize(("bits", "kernel", "stride", "padding", "dilation", "bias"), CONV_CASES)
def test_apt_conv2d_int_matches_reference(
    bits: int, kernel: int, stride: int, padding: int, dilation: int, bias: bool
) -> None:
    # Prepare: 3 -> 4 channels on 2x3x10x9 inputs
    torch.manual_seed(bits * 7 + kernel)
    conv = dict(stride=stride, padding=padding, dilation=dilation)
    layer = APTConv2d.from_float(
        nn.Conv2d(3, 4, kernel, bias=bias, **conv),  # type: ignore
        PrecisionPolicy(bits_min=2, bits_max=16, bits_init=bits),
    )
    x = _randn(2, 3, 10, 9, seed=bits)
    gy = _randn(*F.conv2d(x, torch.zeros(4, 3, kernel, kernel), **conv).shape, seed=kernel)

    # Execute / Assert
    _check(layer, x, gy, conv, f"conv2d {bits} bits k={kernel} {conv} bias={bias}")


@pytest.mark.parametrize(("bits", "kernel", "stride", "padding", "dilation", "bias"), CONV_CASES)
def test_apt_conv1d_int_matches_reference(
    bits: int, kernel: int, stride: int, padding: int, dilation: int, bias: bool
) -> None:
    # Prepare: 3 -> 5 channels on 2x3x17 inputs
    torch.manual_seed(bits * 11 + kernel)
    conv = dict(stride=stride, padding=padding, dilation=dilation)
    layer = APTConv1d.from_float(
        nn.Conv1d(3, 5, kernel, bias=bias, **conv),  # type: ignore
        PrecisionPolicy(bits_min=2, bits_max=16, bits_init=bits),
    )
    x = _randn(2, 3, 17, seed=bits)
    gy = _randn(*F.conv1d(x, torch.zeros(5, 3, kernel), **conv).shape, seed=kernel)

    # Execute / Assert
    _check(layer, x, gy, conv, f"conv1d {bits} bits k={kernel} {conv} bias={bias}")


@pytest.mark.parametrize("bits", [4, 8, 12])
def test_int_backward_reaches_every_apt_layer_and_float_parameter(bits: int) -> None:
    # Prepare
    ref, intm = twin_models(make_all_layers_net(), fixed_policy_at(bits))
    x, y = make_batch()
    grads = []

    # Execute
    for model, name in ((ref, "reference"), (intm, "int")):
        with backend(name):
            model.train()
            F.cross_entropy(model(x), y).backward()
            grads.append(
                {
                    f"{n}.{w}": layer.live(w).grad  # type: ignore[union-attr]
                    for n, layer in apt_layers(model).items()
                    for w in layer.tensors()
                }
            )
            grads[-1].update({n: p.grad for n, p in model.named_parameters()})

    # Assert: every APT tensor and the float LayerNorm got the reference's gradient
    assert set(grads[1]) == {
        "conv2.weight",
        "conv2.bias",
        "conv1.weight",
        "conv1.bias",
        "head.weight",
        "head.bias",
        "norm.weight",
        "norm.bias",
    }
    for key, want in grads[0].items():
        assert grads[1][key] is not None, f"no gradient reached {key}"
        torch.testing.assert_close(grads[1][key], want, rtol=0, atol=0, msg=key)
    assert all(m.fallbacks == 0 for m in apt_layers(intm).values())


@pytest.mark.parametrize(
    ("policy", "reason"),
    [
        ({"act_bits": 9}, "act_bits/err_bits outside 1..8"),
        ({"err_bits": 12}, "act_bits/err_bits outside 1..8"),
        ({"act_bits": 16, "err_bits": 16}, "act_bits/err_bits outside 1..8"),
    ],
)
@pytest.mark.usefixtures("fresh_fallback_log")
def test_int_fallback_wide_act_err_bits_counted_logged_once_equal(
    policy: dict[str, int], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare
    torch.manual_seed(0)
    layer = APTLinear.from_float(nn.Linear(24, 7), fixed_policy_at(12, **policy))
    x, gy = _randn(5, 24, seed=1), _randn(5, 7, seed=2)

    # Execute: two training steps' worth of calls on the int backend
    with caplog.at_level(logging.WARNING, logger="apt_core.kernels.backend"):
        ref = _run(copy.deepcopy(layer), "reference", x, gy)
        int_layer = copy.deepcopy(layer)
        got = _run(int_layer, "int", x, gy)
        _run(int_layer, "int", x, gy)

    # Assert: the fallback is the reference, counted per call, logged once
    for key, want in ref.items():
        torch.testing.assert_close(got[key], want, rtol=0, atol=0, msg=key)
    assert int_layer.fallbacks == 2
    logged = [r for r in caplog.records if reason in r.getMessage()]
    assert len(logged) == 1


@pytest.mark.parametrize("one_d", [True, False])
@pytest.mark.usefixtures("fresh_fallback_log")
def test_int_fallback_grouped_conv_counted_logged_once_equal(
    one_d: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: groups=2 convolutions cannot run on the integer GEMMs
    torch.manual_seed(0)
    cls, conv = (APTConv1d, nn.Conv1d) if one_d else (APTConv2d, nn.Conv2d)
    layer = cls.from_float(
        conv(4, 6, 3, padding=1, groups=2),  # type: ignore[arg-type]
        fixed_policy_at(10),
    )
    x = _randn(2, 4, 9, seed=1) if one_d else _randn(2, 4, 5, 5, seed=1)
    gy = _randn(2, 6, 9, seed=2) if one_d else _randn(2, 6, 5, 5, seed=2)

    # Execute
    with caplog.at_level(logging.WARNING, logger="apt_core.kernels.backend"):
        ref = _run(copy.deepcopy(layer), "reference", x, gy)
        int_layer = copy.deepcopy(layer)
        got = _run(int_layer, "int", x, gy)
        _run(int_layer, "int", x, gy)

    # Assert
    for key, want in ref.items():
        torch.testing.assert_close(got[key], want, rtol=0, atol=0, msg=key)
    assert int_layer.fallbacks == 2
    assert len([r for r in caplog.records if "groups != 1" in r.getMessage()]) == 1


def _act_input(seed: int) -> Tensor:
    """Random values with exact zeros and repeated maxima (ReLU edge and pooling ties)."""
    x = _randn(2, 3, 8, 6, seed=seed).round(decimals=1)
    x[0, 0, :2, :2] = 0.0
    x[1, 2, 4:6, 2:4] = 0.7
    return x


def _value_and_grad(module: nn.Module, x: Tensor, gy_seed: int) -> tuple[Tensor, Tensor]:
    xr = x.clone().requires_grad_(True)
    y = module(xr)
    y.backward(_randn(*y.shape, seed=gy_seed))
    assert xr.grad is not None
    return y.detach(), xr.grad


@pytest.mark.parametrize(
    "pool",
    [
        dict(kernel_size=2),
        dict(kernel_size=2, stride=3),
        dict(kernel_size=3, padding=1),
        dict(kernel_size=(2, 3)),
        dict(kernel_size=3, ceil_mode=True),
    ],
)
def test_to_apt_swapped_activations_match_torch_and_swap_back(pool: dict[str, object]) -> None:
    # Prepare
    model = nn.Sequential(nn.ReLU(), nn.MaxPool2d(**pool))  # type: ignore[arg-type]
    converted = to_apt(copy.deepcopy(model))
    x = _act_input(seed=3)

    # Execute
    with backend("int"):
        got = _value_and_grad(converted, x, gy_seed=4)
    want = _value_and_grad(model, x, gy_seed=4)
    back = to_float(converted)

    # Assert
    assert [type(m) for m in converted] == [APTReLU, APTMaxPool2d]
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    assert [type(m) for m in back] == [nn.ReLU, nn.MaxPool2d]
    assert repr(back) == repr(model)


def test_apt_relu_gradient_matches_nn_relu_with_nan_input() -> None:
    # Prepare: nn.ReLU passes the gradient where the input is nan (its backward tests the
    # output, nan <= 0 is false); a mask of x > 0 drops it
    x = torch.tensor([float("nan"), -1.0, 0.0, 2.0, float("inf"), -float("inf")])

    # Execute
    with backend("int"):
        got = _value_and_grad(APTReLU(), x, gy_seed=5)
    want = _value_and_grad(nn.ReLU(), x, gy_seed=5)

    # Assert
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0, equal_nan=True)
