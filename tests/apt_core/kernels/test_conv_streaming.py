"""The convolution paths that save memory against their whole-tensor versions, bit for bit."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import Tensor

from apt_core.kernels import conv, im2col, native
from apt_core.kernels.activations import APTMaxPool2d, APTReLU
from apt_core.kernels.conv import ConvProducts
from apt_core.kernels.conv_geometry import weight_matrix
from apt_core.kernels.conv_weight_grad import conv2d_weight_grad_int
from apt_core.kernels.im2col import (
    Epilogue,
    conv2d_forward_int,
    conv2d_input_grad_int,
)
from apt_core.kernels.storage import encode
from apt_core.quant import code_range
from tests.utils.backends import backend

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


def _affine_epilogue(channels: int, seen: list[int], chunk_bytes: int = 1 << 18) -> Epilogue:
    """float32 ``acc[:, :channels] * 0.5 + acc[:, -1]``: reads columns past ``channels``."""

    def finish(acc: Tensor, out: Tensor) -> None:
        seen.append(acc.shape[0])
        out.copy_(acc[:, :channels].to(torch.float32) * 0.5 + acc[:, -1:].to(torch.float32))

    return Epilogue(channels, finish, chunk_bytes)


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


def test_conv2d_epilogue_budget_counts_the_accumulator() -> None:
    # Prepare: a budget that holds 10 im2col rows of K = 9 alone, 2 with a 4*O accumulator
    gen = torch.Generator().manual_seed(2)
    x, wt = _codes(2, 1, 6, 1, generator=gen), _codes(8, 1, 3, 1, generator=gen)
    seen: list[int] = []
    epilogue = _affine_epilogue(7, seen, chunk_bytes=90)

    # Execute
    conv2d_forward_int(x, weight_matrix(wt), (3, 1), 1, (1, 0), epilogue=epilogue)

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
    monkeypatch.setattr(conv, "FORWARD_CHUNK_BYTES", budget)
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


def _with_native(enabled: bool, fn):  # type: ignore[no-untyped-def]
    native.set_native(enabled)
    try:
        return fn()
    finally:
        native.set_native(True)


@needs_cc
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("chunk", [None, 5, 29])
@pytest.mark.parametrize(
    "geometry",
    [
        *GEOMETRIES,
        (2, 3, 6, 6, 4, (3, 3), (2, 2), (0, 0), (1, 1)),  # the spread crops: negative pads
        (2, 4, 9, 7, 3, (2, 2), (3, 2), (1, 1), (2, 2)),
        (3, 5, 1, 17, 6, (1, 3), (1, 2), (0, 1), (1, 1)),  # 1-d as H = 1
    ],
)
def test_native_im2col_gather_matches_the_built_placed_image(
    geometry: tuple, chunk: int | None, channels_last: bool
) -> None:
    # Prepare: C > 2, so the native gather (no padded copy) runs when native is on
    n, c, h, w, o, kernel, stride, padding, dilation = geometry
    gen = torch.Generator().manual_seed(3)
    x, wt = _codes(n, c, h, w, generator=gen), _codes(o, c, *kernel, generator=gen)
    geo = (kernel, stride, padding, dilation)
    w_mat = weight_matrix(wt)
    e = _codes(*conv2d_forward_int(x, w_mat, *geo).shape, generator=gen)
    if channels_last:
        x, e = (t.contiguous(memory_format=torch.channels_last) for t in (x, e))

    def run() -> tuple[Tensor, ...]:
        return (
            conv2d_forward_int(x, w_mat, *geo, chunk_rows=chunk),
            conv2d_input_grad_int(e, w_mat, (h, w), *geo, chunk_rows=chunk),
            conv2d_weight_grad_int(e, x, *geo, chunk_rows=chunk),
        )

    # Execute
    got, want = _with_native(True, run), _with_native(False, run)

    # Assert
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@needs_cc
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("one_d", [False, True])
def test_conv_bias_grad_native_sums_match_torch(layout: str, one_d: bool) -> None:
    # Prepare
    gen = torch.Generator().manual_seed(4)
    shape = (5, 7, 13) if one_d else (5, 7, 4, 6)
    gq = _codes(*shape, generator=gen)
    if layout == "channels_last":
        gq = gq.movedim(1, -1).contiguous().movedim(-1, 1)
    elif layout == "strided":
        gq = _codes(*shape[:-1], 2 * shape[-1], generator=gen)[..., ::2]
    weight = (7, 3, 3) if one_d else (7, 3, 3, 3)
    ops = ConvProducts(weight, {"stride": 1, "padding": 0, "dilation": 1, "groups": 1})
    dims = (0, 2) if one_d else (0, 2, 3)

    # Execute
    got = ops.bias_grad(gq)

    # Assert
    assert got.dtype == torch.int32
    torch.testing.assert_close(got, gq.sum(dims, dtype=torch.int32), rtol=0, atol=0)


def test_apt_max_pool_gradient_keeps_the_input_layout() -> None:
    # Prepare: a channels_last input, as a conv's output is on the integer path
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, 4, 6, 8, generator=gen).contiguous(memory_format=torch.channels_last)
    gy = torch.randn(3, 4, 3, 4, generator=gen)
    pool = APTMaxPool2d(2)
    xa, xr = x.clone().requires_grad_(), x.clone().requires_grad_()

    # Execute
    with backend("int"):
        pool(xa).backward(gy)
    torch.nn.MaxPool2d(2)(xr).backward(gy)

    # Assert: the same values, laid out like the input (the ReLU mask before it is)
    assert xa.grad is not None and xr.grad is not None
    assert xa.grad.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(xa.grad, xr.grad, rtol=0, atol=0)


@needs_cc
@pytest.mark.parametrize("n", [1, 7, 64, 131, 1000])
def test_native_relu_bits_pack_the_uint8_mask(n: int) -> None:
    # Prepare: NaN passes (as in torch.relu), -0.0 and +0.0 do not
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=gen)
    x[::5] = float("nan")
    x[1::7] = -0.0
    g = torch.randn(n, generator=gen)

    # Execute
    y, mask = native.relu(x)
    y_bits, bits = native.relu_bits(x)
    unpacked = ((bits.view(-1, 1) >> torch.arange(8, dtype=torch.uint8)) & 1).view(-1)[:n]

    # Assert
    assert bits.numel() == (n + 7) // 8
    assert torch.equal(y_bits.view(torch.int32), y.view(torch.int32))
    assert torch.equal(unpacked, mask)
    got, want = native.relu_grad_bits(g, bits), native.relu_grad(g, mask)
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))


@needs_cc
@pytest.mark.parametrize("grad_layout", ["same", "nchw", "float64"])
def test_apt_relu_packed_mask_gradient_matches_nn_relu(grad_layout: str) -> None:
    # Prepare: a channels_last input; its gradient arrives in several layouts and dtypes
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(3, 5, 4, 7, generator=gen).contiguous(memory_format=torch.channels_last)
    x[0, 0, 0, :3] = torch.tensor([float("nan"), 0.0, -0.0])
    gy = torch.randn(3, 5, 4, 7, generator=gen)
    if grad_layout == "same":
        gy = gy.contiguous(memory_format=torch.channels_last)
    xa, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    if grad_layout == "float64":
        xa, xr, gy = (t.detach().double().requires_grad_(t.requires_grad) for t in (xa, xr, gy))

    # Execute
    with backend("int"):
        ya = APTReLU()(xa)
        ya.backward(gy)
    yr = torch.nn.ReLU()(xr)
    yr.backward(gy)

    # Assert
    assert xa.grad is not None and xr.grad is not None
    torch.testing.assert_close(ya, yr, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(xa.grad, xr.grad, rtol=0, atol=0)
