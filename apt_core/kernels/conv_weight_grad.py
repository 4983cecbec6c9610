"""Exact integer weight gradient of a convolution, reduced over chunked NHWC im2col rows."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor

from apt_core.kernels.im2col import (
    INT32_EXACT_REDUCTION,
    Chunk,
    ConvArgumentError,
    IntPair,
    _check,
    _geometry,
    _im2col_chunks,
    _nhwc_placed,
    _patches,
    _rows_per_chunk,
)
from apt_core.kernels.matmul import int8_mm


def _reduce_rows(e_rows: Tensor, chunks: Iterable[Chunk]) -> Tensor:
    """Exact ``e_rows @ im2col`` accumulated over row chunks (int64 past the int32 bound)."""
    wide, acc = e_rows.shape[1] > INT32_EXACT_REDUCTION, None
    for r0, r1, cols in chunks:
        part = int8_mm(e_rows[:, r0:r1], cols)
        acc = (part.to(torch.int64) if wide else part) if acc is None else acc.add_(part)
    assert acc is not None
    return acc


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
        As in ``conv2d_forward_int``.
    out_chunk : int | None (default: None)
        Output channels per slice; None yields all of them at once.
    """
    _check(e, "e", groups)
    _check(x, "x", groups)
    kern, st, pad, dil = _geometry(kernel, stride, padding, dilation)
    patches = _patches(_nhwc_placed(x, (1, 1), (pad[0], pad[0], pad[1], pad[1])), kern, st, dil)
    n, ho, wo = patches.shape[:3]
    if e.shape[0] != n or e.shape[2:] != (ho, wo):
        raise ConvArgumentError(
            f"Error codes of shape {tuple(e.shape)} do not match the "
            f"output ({n}, O, {ho}, {wo}) of this input and geometry."
        )
    o = e.shape[1]
    e_nhwc = e.permute(0, 2, 3, 1)
    # channels_last errors: a transposed operand beats an int8 transpose copy
    e_mat = e_nhwc.view(-1, o).t() if e_nhwc.is_contiguous() else e.transpose(0, 1).reshape(o, -1)
    step = o if out_chunk is None else max(1, out_chunk)
    # one chunk holds the whole batch: build it once for every slice
    single = _rows_per_chunk(patches[0, 0, 0].numel(), chunk_rows) >= n * ho * wo
    cached = list(_im2col_chunks(patches, chunk_rows)) if single else None
    for o0 in range(0, o, step):
        o1 = min(o0 + step, o)
        source = cached if cached is not None else _im2col_chunks(patches, chunk_rows)
        yield o0, o1, _reduce_rows(e_mat[o0:o1], source)


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
