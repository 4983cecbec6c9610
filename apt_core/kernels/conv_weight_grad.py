"""Exact integer weight gradient of a convolution, reduced over chunked NHWC im2col rows."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor

from apt_core.kernels.conv_geometry import ConvArgumentError, IntPair, _check, _geometry
from apt_core.kernels.im2col import (
    INT32_EXACT_REDUCTION,
    Chunk,
    _im2col_chunks,
    _Placed,
    _rows_per_chunk,
)
from apt_core.kernels.matmul import int8_mm

#: ``(o0, o1, row0, row1)`` -> the ``(o1 - o0, row1 - row0)`` int8 error rows.
ErrorRows = Callable[[int, int, int, int], Tensor]


def _reduce_rows(o0: int, o1: int, error: ErrorRows, chunks: Iterable[Chunk], wide: bool) -> Tensor:
    """Exact ``error @ im2col`` accumulated over row chunks (int64 past the int32 bound)."""
    acc: Tensor | None = None
    part: Tensor | None = None
    for r0, r1, cols in chunks:
        e_rows = error(o0, o1, r0, r1)
        if acc is None:
            acc = int8_mm(e_rows, cols)
            acc = acc.to(torch.int64) if wide else acc
        elif wide:
            acc.add_(int8_mm(e_rows, cols))
        else:  # int32: one reused buffer for the chunk products
            part = int8_mm(e_rows, cols, out=part)
            acc.add_(part)
    assert acc is not None
    return acc


def _error_rows(e: Tensor, chunk_rows: int) -> ErrorRows:
    """The error codes as ``(O, N*Ho*Wo)`` rows in im2col order, one chunk at a time.

    channels_last errors give views (a transposed operand beats an int8 transpose copy);
    NCHW ones copy just the chunk's rows into a reused buffer of ``O * chunk_rows`` (a
    whole-batch transposed copy was the digits CNN's largest backward transient after the
    float error, 262 KB at batch 64).
    """
    n, o, ho, wo = e.shape
    e_nhwc = e.permute(0, 2, 3, 1)
    if e_nhwc.is_contiguous():
        e_mat = e_nhwc.view(-1, o).t()
        return lambda o0, o1, r0, r1: e_mat[o0:o1, r0:r1]
    per_image = ho * wo
    flat = e.reshape(n, o, per_image)
    buf = e.new_empty(o * min(chunk_rows, n * per_image))

    def rows(o0: int, o1: int, r0: int, r1: int) -> Tensor:
        n0, p0 = divmod(r0, per_image)
        out = buf[: (o1 - o0) * (r1 - r0)]
        if p0 == 0 and (r1 - r0) % per_image == 0:  # whole images
            imgs = (r1 - r0) // per_image
            out.view(o1 - o0, imgs, per_image).copy_(flat[n0 : n0 + imgs, o0:o1].transpose(0, 1))
        else:  # output rows of one image
            out.view(o1 - o0, r1 - r0).copy_(flat[n0, o0:o1, p0 : p0 + r1 - r0])
        return out.view(o1 - o0, r1 - r0)

    return rows


def iter_conv2d_weight_grad_int(
    e: Tensor,
    x: Tensor,
    kernel: IntPair,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    *,
    groups: int = 1,
    chunk_rows: int | None = None,
    out_chunk: int | None = None,
) -> Iterator[tuple[int, int, Tensor]]:
    """Yield the exact weight gradient in slices ``(o0, o1, grad[o0:o1])`` along O.

    Each slice is ``(o1 - o0, kh*kw*C)`` in ``weight_matrix`` column order, int32 while
    ``N*Ho*Wo <= INT32_EXACT_REDUCTION`` and int64 beyond. Consume a slice before asking
    for the next to keep only one accumulator alive. When the im2col of the batch needs
    more than one chunk it is rebuilt for every slice (time traded for memory).

    Parameters
    ----------
    e : Tensor
        int8 error codes ``(N, O, Ho, Wo)``.
    x : Tensor
        int8 input codes ``(N, C, H, W)`` of the forward pass.
    kernel, stride, padding, dilation, groups, chunk_rows
        As in ``conv2d_forward_int``; the chunk budget counts the error rows' copy.
    out_chunk : int | None (default: None)
        Output channels per slice; None yields all of them at once.
    """
    _check(e, "e", groups)
    _check(x, "x", groups)
    kern, st, pad, dil = _geometry(kernel, stride, padding, dilation)
    placed = _Placed(x, (1, 1), (pad[0], pad[0], pad[1], pad[1]))
    ho, wo = placed.out_size(kern, st, dil)
    n = x.shape[0]
    if e.shape[0] != n or e.shape[2:] != (ho, wo):
        raise ConvArgumentError(
            f"Error codes of shape {tuple(e.shape)} do not match the "
            f"output ({n}, O, {ho}, {wo}) of this input and geometry."
        )
    o = e.shape[1]
    k = kern[0] * kern[1] * x.shape[1]
    rows = _rows_per_chunk(k + o, chunk_rows)
    error = _error_rows(e, max(rows, wo))  # a chunk holds at least one output row
    wide = n * ho * wo > INT32_EXACT_REDUCTION
    step = o if out_chunk is None else max(1, out_chunk)
    chunks = (placed, kern, st, dil, chunk_rows, o)
    # one chunk holds the whole batch: build it once for every slice
    cached = list(_im2col_chunks(*chunks)) if rows >= n * ho * wo else None
    for o0 in range(0, o, step):
        o1 = min(o0 + step, o)
        source = cached if cached is not None else _im2col_chunks(*chunks)
        yield o0, o1, _reduce_rows(o0, o1, error, source, wide)


def conv2d_weight_grad_int(
    e: Tensor,
    x: Tensor,
    kernel: IntPair,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    *,
    groups: int = 1,
    chunk_rows: int | None = None,
) -> Tensor:
    """Exact weight gradient ``(O, kh*kw*C)`` in ``weight_matrix`` column order.

    int32 while the reduction ``N*Ho*Wo <= INT32_EXACT_REDUCTION``, int64 beyond (the
    reduction is split and summed in int64). Arguments as in
    ``iter_conv2d_weight_grad_int``; ``weight_from_matrix`` turns it into ``(O, C, kh, kw)``.
    """
    ((_, _, grad),) = iter_conv2d_weight_grad_int(
        e, x, kernel, stride, padding, dilation, groups=groups, chunk_rows=chunk_rows
    )
    return grad
