"""Exactness of the int8 im2col convolution kernels against float64 references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.grad import conv1d_input, conv1d_weight, conv2d_input, conv2d_weight

from apt_core.kernels.conv1d import (
    conv1d_forward_int,
    conv1d_input_grad_int,
    conv1d_weight_grad_int,
    weight_from_matrix1d,
)
from apt_core.kernels.conv_geometry import (
    ConvArgumentError,
    ConvGroupsError,
    weight_from_matrix,
    weight_matrix,
)
from apt_core.kernels.conv_weight_grad import conv2d_weight_grad_int, iter_conv2d_weight_grad_int
from apt_core.kernels.im2col import (
    INT32_EXACT_REDUCTION,
    TRANSPOSED_MAX_CHANNELS,
    conv2d_forward_int,
    conv2d_input_grad_int,
)

# (N, C, H, W, O, kernel, stride, padding, dilation, chunk_rows)
GEOMETRIES_2D = [
    (2, 3, 7, 9, 5, (3, 3), (1, 1), (1, 1), (1, 1), None),
    (2, 3, 7, 9, 5, (3, 2), (2, 1), (1, 2), (1, 2), None),
    (2, 3, 10, 9, 4, (3, 3), (3, 2), (0, 1), (2, 1), 5),
    (1, 1, 8, 8, 32, (3, 3), (1, 1), (1, 1), (1, 1), None),
    (3, 4, 11, 6, 7, (1, 1), (2, 2), (0, 0), (1, 1), 7),
    (2, 4, 11, 6, 7, (2, 3), (2, 2), (2, 2), (1, 1), 100),
    (1, 5, 5, 5, 3, (5, 5), (1, 1), (0, 0), (1, 1), None),
    (3, 2, 9, 13, 6, (1, 4), (1, 3), (0, 2), (1, 2), 17),
    (4, 16, 8, 8, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (2, 6, 13, 11, 5, (3, 3), (2, 2), (2, 0), (2, 2), 3),
    (2, 1, 5, 3, 4, (2, 3), (1, 1), (0, 0), (1, 1), 1),
    (3, 2, 7, 8, 5, (3, 3), (2, 1), (1, 1), (1, 1), 11),
    (2, 1, 9, 9, 3, (3, 3), (1, 1), (2, 2), (2, 2), 13),
    (1, 1, 1, 1, 1, (1, 1), (1, 1), (0, 0), (1, 1), None),
    (1, 3, 3, 3, 1, (3, 3), (1, 1), (0, 0), (1, 1), None),
    (2, 1, 4, 4, 1, (1, 1), (1, 1), (0, 0), (1, 1), 3),
]

# (N, C, L, O, kernel, stride, padding, dilation, chunk_rows)
GEOMETRIES_1D = [
    (3, 1, 40, 8, 5, 1, 2, 1, None),
    (2, 6, 40, 9, 3, 2, 1, 1, 7),
    (2, 5, 21, 4, 3, 2, 1, 1, None),
    (1, 3, 17, 5, 4, 3, 2, 2, 5),
    (2, 4, 10, 4, 1, 1, 0, 1, None),
]


def _codes(*shape: int, generator: torch.Generator) -> Tensor:
    return torch.randint(-128, 128, shape, dtype=torch.int8, generator=generator)


def _as_f64(t: Tensor) -> Tensor:
    return t.to(torch.float64)


@pytest.mark.parametrize("geometry", GEOMETRIES_2D)
def test_conv2d_int_matches_reference(geometry: tuple) -> None:
    # Prepare
    n, c, h, w, o, kernel, stride, padding, dilation, chunk = geometry
    gen = torch.Generator().manual_seed(0)
    x, wt = _codes(n, c, h, w, generator=gen), _codes(o, c, *kernel, generator=gen)
    ref_y = F.conv2d(_as_f64(x), _as_f64(wt), None, stride, padding, dilation)
    e = _codes(*ref_y.shape, generator=gen)
    ref_dx = conv2d_input(x.shape, _as_f64(wt), _as_f64(e), stride, padding, dilation)
    ref_dw = conv2d_weight(_as_f64(x), wt.shape, _as_f64(e), stride, padding, dilation)
    w_mat = weight_matrix(wt)
    geo = (kernel, stride, padding, dilation)

    # Execute
    y = conv2d_forward_int(x, w_mat, *geo, chunk_rows=chunk)
    dx = conv2d_input_grad_int(e, w_mat, (h, w), *geo, chunk_rows=chunk)
    dw = conv2d_weight_grad_int(e, x, *geo, chunk_rows=chunk)

    # Assert
    assert y.dtype == dx.dtype == dw.dtype == torch.int32
    torch.testing.assert_close(_as_f64(y), ref_y, rtol=0, atol=0)
    torch.testing.assert_close(_as_f64(dx), ref_dx, rtol=0, atol=0)
    torch.testing.assert_close(_as_f64(weight_from_matrix(dw, c, *kernel)), ref_dw, rtol=0, atol=0)


@pytest.mark.parametrize("geometry", GEOMETRIES_1D)
def test_conv1d_int_matches_reference(geometry: tuple) -> None:
    # Prepare
    n, c, length, o, k, stride, padding, dilation, chunk = geometry
    gen = torch.Generator().manual_seed(0)
    x, wt = _codes(n, c, length, generator=gen), _codes(o, c, k, generator=gen)
    ref_y = F.conv1d(_as_f64(x), _as_f64(wt), None, stride, padding, dilation)
    e = _codes(*ref_y.shape, generator=gen)
    ref_dx = conv1d_input(x.shape, _as_f64(wt), _as_f64(e), stride, padding, dilation)
    ref_dw = conv1d_weight(_as_f64(x), wt.shape, _as_f64(e), stride, padding, dilation)
    w_mat = weight_matrix(wt)

    # Execute
    y = conv1d_forward_int(x, w_mat, k, stride, padding, dilation, chunk_rows=chunk)
    dx = conv1d_input_grad_int(e, w_mat, length, k, stride, padding, dilation, chunk_rows=chunk)
    dw = conv1d_weight_grad_int(e, x, k, stride, padding, dilation, chunk_rows=chunk)

    # Assert
    torch.testing.assert_close(_as_f64(y), ref_y, rtol=0, atol=0)
    torch.testing.assert_close(_as_f64(dx), ref_dx, rtol=0, atol=0)
    torch.testing.assert_close(_as_f64(weight_from_matrix1d(dw, c, k)), ref_dw, rtol=0, atol=0)


@pytest.mark.parametrize("out_chunk", [None, 3])
def test_conv2d_int_matches_reference_channels_last_codes(out_chunk: int | None) -> None:
    # Prepare
    gen = torch.Generator().manual_seed(1)
    cl = torch.channels_last
    x = _codes(2, 8, 6, 7, generator=gen).to(memory_format=cl)
    wt = _codes(5, 8, 3, 2, generator=gen)
    geo = ((3, 2), (2, 1), 1, 1)
    ref_y = F.conv2d(_as_f64(x), _as_f64(wt), None, *geo[1:])
    e = _codes(*ref_y.shape, generator=gen).to(memory_format=cl)
    w_mat = weight_matrix(wt)

    # Execute
    y = conv2d_forward_int(x, w_mat, *geo)
    dx = conv2d_input_grad_int(e, w_mat, (6, 7), *geo)
    dw = torch.cat([s[2] for s in iter_conv2d_weight_grad_int(e, x, *geo, out_chunk=out_chunk)])

    # Assert
    torch.testing.assert_close(_as_f64(y), ref_y, rtol=0, atol=0)
    ref_dx = conv2d_input(x.shape, _as_f64(wt), _as_f64(e), *geo[1:])
    torch.testing.assert_close(_as_f64(dx), ref_dx, rtol=0, atol=0)
    ref_dw = conv2d_weight(_as_f64(x), wt.shape, _as_f64(e), *geo[1:])
    torch.testing.assert_close(_as_f64(weight_from_matrix(dw, 8, 3, 2)), ref_dw, rtol=0, atol=0)


@pytest.mark.parametrize("c", [1, TRANSPOSED_MAX_CHANNELS, TRANSPOSED_MAX_CHANNELS + 1, 40])
def test_conv2d_forward_int_exact_extreme_codes_both_layouts(c: int) -> None:
    # Prepare
    x = torch.full((2, c, 5, 5), -128, dtype=torch.int8)
    wt = torch.full((3, c, 1, 1), -128, dtype=torch.int8)

    # Execute
    y = conv2d_forward_int(x, weight_matrix(wt), 1)

    # Assert
    assert y.dtype == torch.int32
    expected = torch.full((2, 3, 5, 5), c << 14, dtype=torch.int32)
    torch.testing.assert_close(y, expected, rtol=0, atol=0)


@pytest.mark.parametrize("k", [INT32_EXACT_REDUCTION, INT32_EXACT_REDUCTION + 1])
def test_conv2d_forward_int_exact_at_overflow_boundary(k: int) -> None:
    # Prepare: a 1x1 conv over k channels of -128 * -128 sums to k * 2**14
    x = torch.full((1, k, 1, 1), -128, dtype=torch.int8)
    w_mat = torch.full((2, k), -128, dtype=torch.int8)

    # Execute
    y = conv2d_forward_int(x, w_mat, 1)

    # Assert
    assert y.dtype == (torch.int32 if k <= INT32_EXACT_REDUCTION else torch.int64)
    assert y.flatten().tolist() == [k << 14] * 2


def test_conv2d_input_grad_int_exact_past_overflow_boundary() -> None:
    # Prepare: reduction kh*kw*O = 2**17 of -128 * -128
    o = INT32_EXACT_REDUCTION + 1
    e = torch.full((1, o, 1, 1), -128, dtype=torch.int8)
    w_mat = torch.full((o, 1), -128, dtype=torch.int8)

    # Execute
    dx = conv2d_input_grad_int(e, w_mat, (1, 1), 1)

    # Assert
    assert dx.dtype == torch.int64
    assert dx.item() == 1 << 31


@pytest.mark.parametrize("chunk", [None, 50_000])
def test_conv2d_weight_grad_int_exact_past_overflow_boundary(chunk: int | None) -> None:
    # Prepare: reduction N*Ho*Wo = 2**17 rows of -128 * -128
    x = torch.full((2, 1, 256, 256), -128, dtype=torch.int8)
    e = torch.full((2, 2, 256, 256), -128, dtype=torch.int8)

    # Execute
    dw = conv2d_weight_grad_int(e, x, 1, chunk_rows=chunk)

    # Assert
    assert dw.dtype == torch.int64
    assert dw.flatten().tolist() == [1 << 31] * 2


def test_conv2d_weight_grad_int_int32_below_overflow_boundary() -> None:
    # Prepare: N*Ho*Wo = 2**17 - 1 rows still fit int32
    x = torch.full((1, 1, 1, INT32_EXACT_REDUCTION), -128, dtype=torch.int8)
    e = torch.full((1, 1, 1, INT32_EXACT_REDUCTION), -128, dtype=torch.int8)

    # Execute
    dw = conv2d_weight_grad_int(e, x, 1, chunk_rows=40_000)

    # Assert
    assert dw.dtype == torch.int32
    assert dw.item() == INT32_EXACT_REDUCTION << 14


@pytest.mark.parametrize(("chunk", "out_chunk"), [(None, 3), (7, 3), (5, 100)])
def test_iter_conv2d_weight_grad_int_slices_match_full(chunk: int | None, out_chunk: int) -> None:
    # Prepare
    gen = torch.Generator().manual_seed(7)
    x, e = _codes(3, 4, 6, 5, generator=gen), _codes(3, 8, 4, 3, generator=gen)
    geo = ((2, 2), 2, 1, 1)
    full = conv2d_weight_grad_int(e, x, *geo)

    # Execute
    slices = list(iter_conv2d_weight_grad_int(e, x, *geo, chunk_rows=chunk, out_chunk=out_chunk))

    # Assert
    assert [s[0] for s in slices] == list(range(0, 8, min(out_chunk, 8)))
    torch.testing.assert_close(torch.cat([s[2] for s in slices]), full, rtol=0, atol=0)


def test_weight_matrix_round_trip() -> None:
    # Prepare
    w = torch.arange(5 * 3 * 2 * 4, dtype=torch.int32).reshape(5, 3, 2, 4)

    # Execute
    back = weight_from_matrix(weight_matrix(w), 3, 2, 4)

    # Assert
    assert weight_matrix(w).shape == (5, 2 * 4 * 3)
    torch.testing.assert_close(back, w, rtol=0, atol=0)


def test_conv2d_forward_int_groups_raises() -> None:
    # Prepare
    x = torch.zeros((1, 4, 5, 5), dtype=torch.int8)
    w_mat = torch.zeros((4, 18), dtype=torch.int8)

    # Execute / Assert
    with pytest.raises(ConvGroupsError, match="groups=2"):
        conv2d_forward_int(x, w_mat, 3, groups=2)
    with pytest.raises(ConvGroupsError):
        conv2d_weight_grad_int(torch.zeros((1, 4, 3, 3), dtype=torch.int8), x, 3, groups=4)


def test_conv2d_forward_int_float_input_raises() -> None:
    # Prepare
    x = torch.zeros((1, 2, 5, 5))

    # Execute / Assert
    with pytest.raises(ConvArgumentError, match="int8"):
        conv2d_forward_int(x, torch.zeros((3, 18), dtype=torch.int8), 3)


def test_conv2d_input_grad_int_mismatched_size_raises() -> None:
    # Prepare
    e = torch.zeros((1, 3, 4, 4), dtype=torch.int8)

    # Execute / Assert
    with pytest.raises(ConvArgumentError, match="does not come from"):
        conv2d_input_grad_int(e, torch.zeros((3, 18), dtype=torch.int8), (9, 9), 3, 1, 1)
