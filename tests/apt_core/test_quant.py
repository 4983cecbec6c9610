"""Tests of the fixed-point primitives in apt_core.quant."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from apt_core.quant import (
    choose_exponent,
    code_range,
    dequantize,
    fake_quantize_dynamic,
    quantize,
    quantize_activation,
    quantize_error,
    stochastic_round,
)
from tests.utils.fixed_point import ref_exponent, ref_fake_quantize, ref_quantize

BITS = (2, 3, 4, 8, 12, 16)
EXPONENTS = (-3, 0, 5, 12)


def _in_range_values(bits: int, exponent: int, n: int = 4096, seed: int = 0) -> torch.Tensor:
    """Uniform random reals spanning the whole representable range of the grid."""
    lo, hi = code_range(bits)
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    return ((lo + (hi - lo) * u) * 2.0**-exponent).float()


@pytest.mark.parametrize("bits", range(2, 17))
def test_code_range_is_signed_twos_complement(bits: int) -> None:
    # Execute
    lo, hi = code_range(bits)

    # Assert
    assert (lo, hi) == (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


@pytest.mark.parametrize("exponent", EXPONENTS)
@pytest.mark.parametrize("bits", BITS)
def test_quantize_dequantize_error_within_half_step(bits: int, exponent: int) -> None:
    # Prepare
    x = _in_range_values(bits, exponent, seed=bits * 100 + exponent)
    delta = 2.0**-exponent

    # Execute
    codes = quantize(x, bits, exponent)
    back = dequantize(codes, exponent)

    # Assert
    assert codes.dtype == torch.int32
    torch.testing.assert_close(codes.long(), ref_quantize(x, bits, exponent), rtol=0, atol=0)
    assert float((back - x).abs().max()) <= delta / 2


@pytest.mark.parametrize("bits", BITS)
def test_quantize_saturates_at_code_range(bits: int) -> None:
    # Prepare
    exponent = 3
    lo, hi = code_range(bits)
    x = torch.tensor(
        [
            1e6,
            (hi + 0.9) * 2.0**-exponent,
            -1e6,
            (lo - 0.9) * 2.0**-exponent,
            float("inf"),
            float("-inf"),
        ]
    )

    # Execute
    codes = quantize(x, bits, exponent)

    # Assert
    assert codes.tolist() == [hi, hi, lo, lo, hi, lo]


def test_quantize_rejects_unknown_rounding() -> None:
    # Prepare
    x = torch.zeros(3)

    # Execute / Assert
    with pytest.raises(ValueError, match="rounding='up'"):
        quantize(x, 8, 0, rounding="up")


def test_dequantize_scales_codes_by_power_of_two() -> None:
    # Prepare
    codes = torch.tensor([-128, -1, 0, 1, 127], dtype=torch.int32)

    # Execute
    values = dequantize(codes, 4)
    coarse = dequantize(codes, -2)

    # Assert
    torch.testing.assert_close(values, torch.tensor([-8.0, -0.0625, 0.0, 0.0625, 7.9375]))
    torch.testing.assert_close(coarse, torch.tensor([-512.0, -4.0, 0.0, 4.0, 508.0]))


def test_stochastic_round_unbiased_in_expectation() -> None:
    # Prepare: 64 non-integer values, each rounded 20 000 times
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(64, generator=gen) - 0.5) * 200.0
    samples = x.repeat(20_000, 1)

    # Execute
    r = stochastic_round(samples, generator=gen)

    # Assert: the error of one draw has std <= 0.5, so the per-value mean over 20 000
    # draws has std <= 0.0036; 0.02 is > 5 sigma. The grand mean's std is <= 0.00045.
    err = r - samples
    per_value = err.double().mean(dim=0)
    assert float(per_value.abs().max()) < 0.02
    assert abs(float(err.double().mean())) < 0.003
    # and it is not plain nearest rounding in disguise
    assert float(err.abs().max()) > 0.5


def test_quantize_stochastic_unbiased_in_expectation() -> None:
    # Prepare: values between grid points of a 4-bit, exponent-2 grid
    gen = torch.Generator().manual_seed(1)
    bits, exponent = 4, 2
    x = _in_range_values(bits, exponent, n=32, seed=3).clamp(-1.9, 1.7)
    samples = x.repeat(20_000, 1)

    # Execute
    back = dequantize(quantize(samples, bits, exponent, "stochastic", gen), exponent)

    # Assert: per-draw error std <= delta/2 = 0.125 -> mean std <= 0.0009; tolerance 0.005
    per_value = (back - samples).double().mean(dim=0)
    assert float(per_value.abs().max()) < 0.005


def test_stochastic_round_returns_floor_or_ceil() -> None:
    # Prepare
    gen = torch.Generator().manual_seed(2)
    x = (torch.rand(200_000, generator=gen) - 0.5) * 2000.0
    x = x[x != torch.round(x)]

    # Execute
    r = stochastic_round(x, generator=gen)

    # Assert
    assert bool(((r == torch.floor(x)) | (r == torch.ceil(x))).all())
    # both neighbours actually occur
    assert bool((r == torch.floor(x)).any()) and bool((r == torch.ceil(x)).any())


def test_stochastic_round_keeps_values_already_on_the_grid() -> None:
    # Prepare: 30000 is a valid 16-bit code; ulp(30000) = 2**-9 in float32
    gen = torch.Generator().manual_seed(0)
    x = torch.full((1 << 17,), 30000.0)

    # Execute
    r = stochastic_round(x, generator=gen)

    # Assert
    torch.testing.assert_close(r, x, rtol=0, atol=0)


@settings(max_examples=300, deadline=None, database=None)
@given(
    mantissa=st.floats(min_value=1.0, max_value=2.0, exclude_max=True),
    scale=st.integers(min_value=-60, max_value=60),
    bits=st.integers(min_value=2, max_value=16),
)
def test_choose_exponent_is_largest_non_saturating(mantissa: float, scale: int, bits: int) -> None:
    # Prepare
    max_abs = mantissa * 2.0**scale
    qmax = 2 ** (bits - 1) - 1

    # Execute
    f = choose_exponent(max_abs, bits)

    # Assert: f holds max_abs, f + 1 would saturate, and it is the walked reference
    assert max_abs * 2.0**f <= qmax
    assert max_abs * 2.0 ** (f + 1) > qmax
    assert f == ref_exponent(max_abs, bits)
    codes = quantize(torch.tensor([max_abs, -max_abs], dtype=torch.float64), bits, f)
    assert int(codes.abs().max()) <= qmax


@pytest.mark.parametrize("bits", BITS)
def test_choose_exponent_exact_at_grid_maximum(bits: int) -> None:
    # Prepare: max_abs is exactly the largest code at exponent 5
    qmax = 2 ** (bits - 1) - 1
    max_abs = qmax * 2.0**-5

    # Execute
    f = choose_exponent(max_abs, bits)

    # Assert
    assert f == 5


@pytest.mark.parametrize("max_abs", [0.0, -1.0, float("nan"), float("inf")])
def test_choose_exponent_degenerate_input_returns_bits_minus_one(max_abs: float) -> None:
    # Execute / Assert
    assert choose_exponent(max_abs, 8) == 7


def test_choose_exponent_subnormal_input() -> None:
    # Prepare
    max_abs = 5e-324

    # Execute
    f = choose_exponent(max_abs, 8)

    # Assert
    assert f == ref_exponent(max_abs, 8)


@pytest.mark.parametrize("bits", BITS)
def test_fake_quantize_dynamic_exact_on_grid_values(bits: int) -> None:
    # Prepare: codes with the largest magnitude in (qmax/2, qmax] fix the exponent at 6
    qmax = 2 ** (bits - 1) - 1
    gen = torch.Generator().manual_seed(bits)
    codes = torch.randint(-qmax, qmax + 1, (257,), generator=gen)
    codes[0] = qmax
    x = codes.float() * 2.0**-6

    # Execute
    y = fake_quantize_dynamic(x, bits)

    # Assert
    torch.testing.assert_close(y, x, rtol=0, atol=0)


@pytest.mark.parametrize("bits", BITS)
def test_fake_quantize_dynamic_matches_reference(bits: int) -> None:
    # Prepare
    gen = torch.Generator().manual_seed(10 + bits)
    x = torch.randn(3, 50, generator=gen) * 7.3

    # Execute
    y = fake_quantize_dynamic(x, bits)

    # Assert
    torch.testing.assert_close(y, ref_fake_quantize(x, bits), rtol=0, atol=0)


def test_fake_quantize_dynamic_zero_tensor_returned_unchanged() -> None:
    # Prepare
    x = torch.zeros(4)

    # Execute / Assert
    assert fake_quantize_dynamic(x, 8) is x


def test_fake_quantize_dynamic_tiny_values_stay_finite() -> None:
    # Prepare: a softmax-style gradient whose entries are all tiny or exactly zero
    x = torch.tensor([1e-40, 0.0, -5e-41, 0.0])

    # Execute
    y = fake_quantize_dynamic(x, 8)

    # Assert
    assert bool(torch.isfinite(y).all())
    assert float((y - x).abs().max()) <= 2 * float(x.abs().max())


@pytest.mark.parametrize("bits", (2, 4, 8))
def test_quantize_activation_forward_quantized_gradient_straight_through(bits: int) -> None:
    # Prepare
    gen = torch.Generator().manual_seed(bits)
    x = torch.randn(8, 16, generator=gen).requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    upstream = torch.randn(8, 16, generator=gen)

    # Execute
    y = quantize_activation(x, bits)
    (y * upstream).sum().backward()
    (x_ref * upstream).sum().backward()  # identity: the straight-through reference

    # Assert
    torch.testing.assert_close(y.detach(), ref_fake_quantize(x.detach(), bits))
    assert x.grad is not None
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=0)


def test_quantize_activation_zero_bits_is_identity() -> None:
    # Prepare
    x = torch.randn(5, requires_grad=True)

    # Execute / Assert
    assert quantize_activation(x, 0) is x


@pytest.mark.parametrize("bits", (2, 4, 8))
def test_quantize_error_value_unchanged_gradient_quantized(bits: int) -> None:
    # Prepare
    gen = torch.Generator().manual_seed(20 + bits)
    x = torch.randn(6, 10, generator=gen).requires_grad_(True)
    upstream = torch.randn(6, 10, generator=gen) * 0.01

    # Execute
    y = quantize_error(x, bits)
    y.backward(upstream)

    # Assert
    torch.testing.assert_close(y.detach(), x.detach(), rtol=0, atol=0)
    assert x.grad is not None
    torch.testing.assert_close(x.grad, ref_fake_quantize(upstream, bits), rtol=0, atol=0)
    # the quantized gradient really differs from the raw one
    assert not torch.equal(x.grad, upstream)


def test_quantize_error_gradient_step_is_power_of_two() -> None:
    # Prepare
    x = torch.zeros(4, requires_grad=True)
    upstream = torch.tensor([0.3, -0.11, 0.05, 0.0])

    # Execute
    quantize_error(x, 4).backward(upstream)

    # Assert: max 0.3 -> f = 4 (0.3 * 16 = 4.8 <= 7, 0.3 * 32 > 7), step 1/16
    assert x.grad is not None
    torch.testing.assert_close(x.grad, torch.tensor([5.0, -2.0, 1.0, 0.0]) / 16)


def test_quantize_error_without_grad_or_bits_returns_input() -> None:
    # Prepare
    no_grad = torch.randn(3)
    with_grad = torch.randn(3, requires_grad=True)

    # Execute / Assert
    assert quantize_error(no_grad, 8) is no_grad
    assert quantize_error(with_grad, 0) is with_grad
