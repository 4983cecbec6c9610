"""Exact integer convolution on int8 codes: chunked NHWC im2col feeding an int8 GEMM.

Layout. Products run on an NHWC copy of the NCHW codes (channels_last codes skip an
int8 transpose), so an im2col row is one output pixel and its columns run over
``(i, j, c)`` (kernel row, kernel column, channel): a weight ``(O, C, kh, kw)`` becomes
the GEMM-ready ``weight_matrix(w)`` of shape ``(O, kh*kw*C)``. For
``C <= TRANSPOSED_MAX_CHANNELS`` the im2col is written transposed (``(K, rows)``, inner
loop along an image row) and passed to ``_int_mm`` as a transposed operand: 3-5x faster
to build for a 1-channel input. 1-d is the 2-d case with ``H = 1``.

Exactness. With 8-bit operands every product is at most ``2**14`` in magnitude, so a
reduction of length ``K`` sums to at most ``K * 2**14``. int32 accumulation
(:func:`apt_core.kernels.matmul.int8_mm`) is exact for ``K <= INT32_EXACT_REDUCTION = 2**17 - 1``;
longer reductions (``C*kh*kw``, ``kh*kw*O`` or ``N*Ho*Wo``) are split into pieces of at
most that length whose int32 results are summed in int64, and the result is then int64.
Where ``torch._int_mm`` has no fast kernel (CPUs without int8 dot-product instructions),
``int8_mm`` carries the codes through float32 GEMMs in reductions of at most ``2**10``,
where every partial sum is exact.

Memory. im2col is built in chunks of whole output rows (whole images when they fit) in
one reused buffer, by default ``DEFAULT_CHUNK_BYTES // K`` rows (256 KiB of int8). The
native gather reads padding and the input gradient's stride spread virtually, from the codes
(channels_last) or a per-chunk NHWC copy of the chunk's images; the torch path (and inputs of
at most ``TRANSPOSED_MAX_CHANNELS``) builds the padded NHWC codes. The result is int32, or
with an ``Epilogue`` float32 made chunk by chunk from one reused chunk accumulator. Nothing
is copied to float.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from apt_core.kernels import native
from apt_core.kernels.conv_geometry import (
    ConvArgumentError,
    IntPair,
    _check,
    _geometry,
    _out_size,
)
from apt_core.kernels.matmul import INT32_EXACT_REDUCTION, int8_mm

Chunk = tuple[int, int, Tensor]
#: Chunks as ``(n0, n1, h0, h1)``: images ``n0:n1``, output rows ``h0:h1`` of each.
Plan = list[tuple[int, int, int, int]]

#: Input channel counts up to this build the im2col transposed (measured faster).
TRANSPOSED_MAX_CHANNELS = 2
#: Default budget of one chunk (int8 im2col rows plus any per-row buffers of the caller). 256
#: KiB, not 2 MiB: on the digits CNN at batch 64 the 2 MiB chunk was the largest transient
#: (step peak 4.9 MB -> 3.6 MB at 512 KiB, fp32 4.4 MB), and at 512 KiB the conv2 backward's
#: chunks still set the peak (2.71 -> 2.49 MB above the step's baseline at 256 KiB). The
#: int8 GEMMs cost the same per row for chunks of a few hundred rows.
DEFAULT_CHUNK_BYTES = 1 << 18


@dataclass(frozen=True)
class Epilogue:
    """How each chunk's int32 accumulator becomes its rows of a float32 result.

    ``finish(acc, out)`` receives the chunk's ``(rows, O)`` int32 accumulator (a reused
    buffer) and the ``(rows, channels)`` float32 rows of the result to write. The whole
    ``(N*Ho*Wo, O)`` accumulator then never exists: on the digits CNN at 12 bits it was the
    step's largest tensor (2.1 MB of int32 for a 1 MB float output). ``chunk_bytes`` bounds
    a chunk's im2col rows plus their accumulator rows when no ``chunk_rows`` is given.
    """

    channels: int
    finish: Callable[[Tensor, Tensor], None]
    chunk_bytes: int = DEFAULT_CHUNK_BYTES


def _nhwc_placed(x: Tensor, step: tuple[int, int], pads: tuple[int, int, int, int]) -> Tensor:
    """NHWC copy of NCHW ``x`` spread by ``step`` (zeros between) and padded by ``pads``.

    ``pads`` is ``(top, bottom, left, right)``; negative pads crop. A view when nothing moves.
    """
    n, c, h, w = x.shape
    top, bottom, left, right = pads
    nhwc = x.permute(0, 2, 3, 1)
    if step == (1, 1) and min(pads) >= 0 and (max(pads) == 0 or nhwc.is_contiguous()):
        # channels_last or C = 1: one pad op keeps the layout; no pads: at most a transpose
        padded = F.pad(x, (left, right, top, bottom)) if max(pads) else x
        return padded.permute(0, 2, 3, 1).contiguous()
    hs, ws = (h - 1) * step[0] + 1, (w - 1) * step[1] + 1
    pt, pb, pl, pr = (max(p, 0) for p in pads)
    out = x.new_zeros((n, pt + hs + pb, pl + ws + pr, c))
    out[:, pt : pt + hs : step[0], pl : pl + ws : step[1]] = nhwc
    if min(pads) >= 0:
        return out
    return out[:, pt - top : out.shape[1] - pb + bottom, pl - left : out.shape[2] - pr + right]


@dataclass(frozen=True)
class _Placed:
    """NCHW int8 codes ``x`` as the NHWC image a convolution reads.

    The image is ``x`` spread by ``step`` (zeros between) and padded by ``pads``
    (``(top, bottom, left, right)``; negative pads crop). The native gather reads it
    straight from ``x``; only the torch path (and few channels) builds it.
    """

    x: Tensor
    step: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)

    def out_size(
        self, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]
    ) -> tuple[int, int]:
        """``(Ho, Wo)`` of a convolution with this geometry over the placed image."""
        h, w = self.x.shape[2:]
        top, bottom, left, right = self.pads
        hp = top + (h - 1) * self.step[0] + 1 + bottom
        wp = left + (w - 1) * self.step[1] + 1 + right
        ho = _out_size(hp, kernel[0], stride[0], 0, dilation[0])
        wo = _out_size(wp, kernel[1], stride[1], 0, dilation[1])
        if ho < 1 or wo < 1:
            raise ConvArgumentError(
                f"The padded input ({hp}, {wp}) is smaller than the kernel "
                f"{kernel} at dilation {dilation}."
            )
        return ho, wo


def _patches(
    xp: Tensor, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]
) -> Tensor:
    """Strided ``(N, Ho, Wo, kh, kw, C)`` view of every receptive field of NHWC ``xp``."""
    n, hp, wp, c = xp.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    ho, wo = _out_size(hp, kh, sh, 0, dh), _out_size(wp, kw, sw, 0, dw)
    s_n, s_h, s_w, s_c = xp.stride()
    return xp.as_strided(
        (n, ho, wo, kh, kw, c),
        (s_n, s_h * sh, s_w * sw, s_h * dh, s_w * dw, s_c),
        xp.storage_offset(),
    )


def _rows_per_chunk(row_bytes: int, chunk_rows: int | None, budget: int | None = None) -> int:
    if chunk_rows is not None:
        return max(1, chunk_rows)
    return max(1, (DEFAULT_CHUNK_BYTES if budget is None else budget) // row_bytes)


def _im2col_chunks(
    placed: _Placed,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    chunk_rows: int | None,
    extra_row_bytes: int = 0,
    budget: int | None = None,
) -> Iterator[Chunk]:
    """Yield ``(row0, row1, cols)`` with ``cols`` the ``(rows, K)`` int8 im2col rows.

    Chunks hold whole images when an image fits, else whole output rows of one image.
    ``cols`` lives in a buffer reused by the next chunk: consume it before advancing.
    For few channels ``cols`` is the transpose of a contiguous ``(K, rows)`` buffer.
    ``extra_row_bytes`` counts the caller's own per-row buffers into the chunk budget
    (``budget``, default ``DEFAULT_CHUNK_BYTES``).
    """
    n, c = placed.x.shape[:2]
    ho, wo = placed.out_size(kernel, stride, dilation)
    k, per_image = kernel[0] * kernel[1] * c, ho * wo
    rows = _rows_per_chunk(k + extra_row_bytes, chunk_rows, budget)
    if rows >= per_image:
        imgs = min(n, rows // per_image)
        plan = [(n0, min(n0 + imgs, n), 0, ho) for n0 in range(0, n, imgs)]
    else:
        hs = max(1, rows // wo)
        plan = [(i, i + 1, h0, min(h0 + hs, ho)) for i in range(n) for h0 in range(0, ho, hs)]
    buf = placed.x.new_empty((plan[0][1] - plan[0][0]) * (plan[0][3] - plan[0][2]) * wo * k)
    if c <= TRANSPOSED_MAX_CHANNELS or native.lib() is None:
        chunks = _torch_chunks(placed, kernel, stride, dilation, plan, buf)
    else:
        chunks = _native_chunks(placed, kernel, stride, dilation, plan, buf)
    for n0, h0, cols in chunks:
        row0 = n0 * per_image + h0 * wo
        yield row0, row0 + cols.shape[0], cols


def _torch_chunks(
    placed: _Placed,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    plan: Plan,
    buf: Tensor,
) -> Iterator[tuple[int, int, Tensor]]:
    """Chunks cut from the built placed image (few channels: transposed; or no native)."""
    patches = _patches(_nhwc_placed(placed.x, placed.step, placed.pads), kernel, stride, dilation)
    _, _, wo, kh, kw, c = patches.shape
    k = kh * kw * c
    for n0, n1, h0, h1 in plan:
        count = (n1 - n0) * (h1 - h0) * wo
        src = patches if len(plan) == 1 else patches[n0:n1, h0:h1]
        if c <= TRANSPOSED_MAX_CHANNELS:
            buf[: count * k].view(kh, kw, c, n1 - n0, h1 - h0, wo).copy_(
                src.permute(3, 4, 5, 0, 1, 2)
            )
            cols = buf[: count * k].view(k, count).t()
        else:
            cols = buf[: count * k].view(count, k)
            if not native.gather_into(cols, src):
                cols.view(src.shape).copy_(src)
        yield n0, h0, cols


def _native_chunks(
    placed: _Placed,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    plan: Plan,
    buf: Tensor,
) -> Iterator[tuple[int, int, Tensor]]:
    """Chunks gathered by ``aptk_im2col`` straight from the codes, padding and spread virtual.

    NCHW codes are first copied to NHWC one chunk's images at a time (a reused buffer),
    so neither the padded image nor a whole-batch NHWC copy exists.
    """
    nhwc = placed.x.permute(0, 2, 3, 1)
    _, h, w, c = nhwc.shape
    wo = placed.out_size(kernel, stride, dilation)[1]
    k = kernel[0] * kernel[1] * c
    geo = (wo, *kernel, *stride, *dilation, placed.pads[0], placed.pads[2], *placed.step)
    direct = nhwc.stride(3) == 1
    if direct:
        gather, ptr, per_image = native.Im2col(nhwc, geo), nhwc.data_ptr(), nhwc.stride(0)
    else:  # the first chunk holds the most images
        img_buf = nhwc.new_empty((plan[0][1] - plan[0][0]) * h * w * c)
        gather, ptr, per_image = native.Im2col(img_buf.view(-1, h, w, c), geo), 0, 0
    loaded = (-1, -1)
    for n0, n1, h0, h1 in plan:
        if not direct and (n0, n1) != loaded:  # row chunks of one image share its copy
            img_buf[: (n1 - n0) * h * w * c].view(n1 - n0, h, w, c).copy_(nhwc[n0:n1])
            ptr, loaded = img_buf.data_ptr(), (n0, n1)
        count = (n1 - n0) * (h1 - h0) * wo
        cols = buf[: count * k].view(count, k)
        gather.run(cols, ptr + n0 * per_image, n1 - n0, h0, h1)
        yield n0, h0, cols


def _conv(
    placed: _Placed,
    w_mat: Tensor,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    chunk_rows: int | None,
    epilogue: Epilogue | None = None,
) -> Tensor:
    """Exact ``(N, Ho, Wo, O)`` convolution of the placed codes with ``w_mat``.

    With an ``epilogue`` the result is its float32 ``(N, Ho, Wo, epilogue.channels)``.
    """
    n, c = placed.x.shape[:2]
    ho, wo = placed.out_size(kernel, stride, dilation)
    o, k = w_mat.shape
    if w_mat.dtype != torch.int8 or k != kernel[0] * kernel[1] * c:
        raise ConvArgumentError(
            f"The weight matrix must be int8 with kh*kw*C = {kernel[0] * kernel[1] * c}"
            f" columns, got {w_mat.dtype} of shape {tuple(w_mat.shape)}."
        )
    wt = w_mat.t()
    dtype = torch.int64 if k > INT32_EXACT_REDUCTION else torch.int32
    chunks = (placed, kernel, stride, dilation, chunk_rows)
    if epilogue is None:
        out = torch.empty((n * ho * wo, o), dtype=dtype)
        for r0, r1, cols in _im2col_chunks(*chunks):
            int8_mm(cols, wt, out=out if r1 - r0 == out.shape[0] else out[r0:r1])
        return out.view(n, ho, wo, o)
    if dtype != torch.int32:
        raise ConvArgumentError(
            f"An epilogue needs an int32 accumulator; a reduction of {k} can overflow it."
        )
    out = torch.empty((n * ho * wo, epilogue.channels), dtype=torch.float32)
    acc_buf: Tensor | None = None
    for r0, r1, cols in _im2col_chunks(*chunks, 4 * o, epilogue.chunk_bytes):
        if acc_buf is None:  # the first chunk is the largest
            acc_buf = torch.empty((r1 - r0) * o, dtype=torch.int32)
        acc = acc_buf[: (r1 - r0) * o].view(r1 - r0, o)
        int8_mm(cols, wt, out=acc)
        epilogue.finish(acc, out[r0:r1])
    return out.view(n, ho, wo, epilogue.channels)


def conv2d_forward_int(
    x: Tensor,
    w_mat: Tensor,
    kernel: IntPair,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    *,
    groups: int = 1,
    chunk_rows: int | None = None,
    epilogue: Epilogue | None = None,
) -> Tensor:
    """Exact 2-d convolution of int8 codes: ``sum_{c,i,j} x[n,c,.,.] * w[o,c,i,j]``.

    Parameters
    ----------
    x : Tensor
        int8 input codes ``(N, C, H, W)``, any memory format (channels_last is cheapest).
    w_mat : Tensor
        int8 ``weight_matrix`` of the ``(O, C, kh, kw)`` weight codes.
    kernel, stride, padding, dilation : int or tuple[int, int]
        Convolution geometry as in ``torch.nn.functional.conv2d``; padding is with code 0.
    groups : int (default: 1)
        Must be 1; anything else raises ``ConvGroupsError``.
    chunk_rows : int | None (default: None)
        im2col rows per chunk (rounded to whole output rows); None keeps a chunk under
        ``DEFAULT_CHUNK_BYTES`` (with its accumulator under ``epilogue.chunk_bytes``,
        given an epilogue).
    epilogue : Epilogue | None (default: None)
        Turns each chunk's int32 accumulator into rows of a float32 result; requires
        ``C*kh*kw <= INT32_EXACT_REDUCTION`` (``ConvArgumentError`` otherwise).

    Returns
    -------
    Tensor
        ``(N, O, Ho, Wo)`` int32 sums (int64 if ``C*kh*kw > INT32_EXACT_REDUCTION``), laid
        out channels_last (a permuted view of a contiguous NHWC tensor); with an
        ``epilogue``, its float32 ``(N, epilogue.channels, Ho, Wo)``, laid out alike.
    """
    _check(x, "x", groups)
    kern, st, pad, dil = _geometry(kernel, stride, padding, dilation)
    placed = _Placed(x, (1, 1), (pad[0], pad[0], pad[1], pad[1]))
    return _conv(placed, w_mat, kern, st, dil, chunk_rows, epilogue).permute(0, 3, 1, 2)


def conv2d_input_grad_int(
    e: Tensor,
    w_mat: Tensor,
    input_hw: tuple[int, int],
    kernel: IntPair,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    *,
    groups: int = 1,
    chunk_rows: int | None = None,
    epilogue: Epilogue | None = None,
) -> Tensor:
    """Exact gradient of ``conv2d_forward_int`` w.r.t. its input, for int8 error codes.

    Computed as a convolution (stride 1, same dilation) of the error spread by the stride
    and padded by ``dilation*(k-1) - padding`` with the flipped, transposed weight, so it
    is one more chunked ``_int_mm`` pass (reduction length ``kh*kw*O``).

    Parameters
    ----------
    e : Tensor
        int8 error codes ``(N, O, Ho, Wo)``.
    w_mat : Tensor
        int8 ``weight_matrix`` of the ``(O, C, kh, kw)`` weight codes.
    input_hw : tuple[int, int]
        Spatial size ``(H, W)`` of the forward input (stride may leave it ambiguous).
    kernel, stride, padding, dilation, groups, chunk_rows, epilogue
        As in ``conv2d_forward_int``.

    Returns
    -------
    Tensor
        ``(N, C, H, W)`` int32 (int64 if ``kh*kw*O > INT32_EXACT_REDUCTION``), channels_last;
        with an ``epilogue``, its float32 ``(N, epilogue.channels, H, W)``.
    """
    _check(e, "e", groups)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = _geometry(kernel, stride, padding, dilation)
    h, w = input_hw
    n, o, ho, wo = e.shape
    if w_mat.shape[0] != o or w_mat.shape[1] % (kh * kw):
        raise ConvArgumentError(
            f"Weight matrix of shape {tuple(w_mat.shape)} does not match "
            f"{o} error channels and kernel ({kh}, {kw})."
        )
    if (_out_size(h, kh, sh, ph, dh), _out_size(w, kw, sw, pw, dw)) != (ho, wo):
        raise ConvArgumentError(
            f"Error of spatial size ({ho}, {wo}) does not come from an "
            f"input of size {tuple(input_hw)} with this geometry."
        )
    c = w_mat.shape[1] // (kh * kw)
    wt = w_mat.view(o, kh, kw, c).flip(1, 2).permute(3, 1, 2, 0).reshape(c, kh * kw * o)
    top, left = dh * (kh - 1) - ph, dw * (kw - 1) - pw
    bottom = h + dh * (kh - 1) - (ho - 1) * sh - 1 - top
    right = w + dw * (kw - 1) - (wo - 1) * sw - 1 - left
    placed = _Placed(e, (sh, sw), (top, bottom, left, right))
    out = _conv(placed, wt, (kh, kw), (1, 1), (dh, dw), chunk_rows, epilogue)
    return out.permute(0, 3, 1, 2)
