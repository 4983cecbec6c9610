"""Chunked (streamed) convolution paths against their whole-tensor versions, bit for bit."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import Tensor

from apt_core.kernels import im2col, native
from apt_core.kernels.conv import ConvProducts
from apt_core.kernels.im2col import (
    Epilogue,
    conv2d_forward_int,
    conv2d_input_grad_int,
    weight_matrix,
)
from apt_core.kernels.storage import encode
from apt_core.quant import code_range

needs_cc = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None,
    reason="no C compiler here: the native kernels cannot be built",
)

# (N, C, H, W, O, kernel, stride, padding, dilation)
GEOMETRIES = [
    (3, 5, 7, 9, 6, (3, 3), (1, 1), (1, 1), (1, 1)),
    (2, 4, 10, 9, 5, (3, 2), (2, 1), (1, 2), (1, 2)),
    (2, 3, 11, 6, 7, (2, 3), (2, 2), (2, 0), (2, 1)),
]


def _codes(*shape: int, generator: torch.Generator) -> Tensor:
    return torch.randint(-128, 128, shape, dtype=torch.int8, generator=generator)


def _affine_epilogue(channels: int, seen: list[int]) -> Epilogue:
    """float32 ``acc[:, :channels] * 0.5 + acc[:, -1]``: reads columns past ``channels``."""

    def finish(acc: Tensor, out: Tensor) -> None:
        seen.append(acc.shape[0])
        out.copy_(acc[:, :channels].to(torch.float32) * 0.5 + acc[:, -1:].to(torch.float32))

    return Epilogue(channels, finish)


def _affine(acc_nchw: Tensor, channels: int) -> Tensor:
    acc = acc_nchw.to(torch.float32)
    return acc[:, :channels] * 0.5 + acc[:, -1:]


@pytest.mark.parametrize("chunk", [1, 3, 7, 13, None])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_conv2d_epilogue_matches_whole_accumulator(geometry: tuple, chunk: int | None) -> None:
    # Prepare
    n, c, h, w, o, kernel, stride, padding, dilation = geometry
    gen = torch.Generator().manual_seed(1)
    x, wt = _codes(n, c, h, w, generator=gen), _codes(o, c, *kernel, generator=gen)
    geo = (kernel, stride, padding, dilation)
    w_mat = weight_matrix(wt)
    y_acc = conv2d_forward_int(x, w_mat, *geo)
    e = _codes(*y_acc.shape, generator=gen)
    dx_acc = conv2d_input_grad_int(e, w_mat, (h, w), *geo)
    seen_y: list[int] = []
    seen_dx: list[int] = []

    # Execute
    y = conv2d_forward_int(
        x, w_mat, *geo, chunk_rows=chunk, epilogue=_affine_epilogue(o - 1, seen_y)
    )
    dx = conv2d_input_grad_int(
        e, w_mat, (h, w), *geo, chunk_rows=chunk, epilogue=_affine_epilogue(c - 1, seen_dx)
    )

    # Assert: same values and layout as the whole accumulator, never all rows at once
    torch.testing.assert_close(y, _affine(y_acc, o - 1), rtol=0, atol=0)
    torch.testing.assert_close(dx, _affine(dx_acc, c - 1), rtol=0, atol=0)
    assert y.stride(1) == 1 and dx.stride(1) == 1
    assert sum(seen_y) == y.numel() // y.shape[1] and sum(seen_dx) == dx.numel() // dx.shape[1]
    if chunk is not None:
        assert max(seen_y) < sum(seen_y) and max(seen_dx) < sum(seen_dx)


def test_conv2d_epilogue_budget_counts_the_accumulator(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: a budget that holds 10 im2col rows of K = 9 alone, 2 with a 4*O accumulator
    monkeypatch.setattr(im2col, "DEFAULT_CHUNK_BYTES", 90)
    gen = torch.Generator().manual_seed(2)
    x, wt = _codes(2, 1, 6, 1, generator=gen), _codes(8, 1, 3, 1, generator=gen)
    seen: list[int] = []

    # Execute
    conv2d_forward_int(x, weight_matrix(wt), (3, 1), 1, (1, 0), epilogue=_affine_epilogue(7, seen))

    # Assert
    assert max(seen) == 2


def _stored(o: int, k: int, bits: int, gen: torch.Generator) -> Tensor:
    lo, hi = code_range(bits)
    return encode(torch.randint(lo, hi + 1, (o, k), generator=gen, dtype=torch.int32), bits)


@needs_cc
@pytest.mark.parametrize("one_d", [False, True])
@pytest.mark.parametrize("budget", [997, 1 << 19])
@pytest.mark.parametrize("bits", [12, 16])
def test_conv_products_limbs_stream_matches_torch_kernels(
    monkeypatch: pytest.MonkeyPatch, bits: int, budget: int, one_d: bool
) -> None:
    # Prepare: worst-case limb codes; an odd chunk budget splits images mid-row
    monkeypatch.setattr(im2col, "DEFAULT_CHUNK_BYTES", budget)
    gen = torch.Generator().manual_seed(bits)
    if one_d:
        ops = ConvProducts((6, 5, 3), {"stride": 2, "padding": 1, "dilation": 1, "groups": 1})
        xq = _codes(3, 5, 23, generator=gen)
        x_shape = xq.shape
    else:
        ops = ConvProducts((6, 5, 3, 3), {"stride": 1, "padding": 1, "dilation": 1, "groups": 1})
        xq = _codes(3, 5, 7, 9, generator=gen)
        x_shape = xq.shape
    w = _stored(6, 5 * 3 * (1 if one_d else 3), bits, gen)
    bias = torch.randn(6, generator=gen)
    scale = 2.0**-13
    y_shape = ops.forward(xq, w, True).shape
    gq = _codes(*y_shape, generator=gen)

    # Execute
    got = (
        ops.forward_scaled(xq, w, True, scale, bias),
        ops.input_grad_scaled(gq, w, True, x_shape, scale),
    )
    native.set_native(False)
    try:
        want = (
            ops.forward_scaled(xq, w, True, scale, bias),
            ops.input_grad_scaled(gq, w, True, x_shape, scale),
        )
    finally:
        native.set_native(True)

    # Assert
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
