"""A weight gradient kept as its two int8 factors until the optimizer reads it in rows.

The integer accumulator of ``dW = E.T @ X`` holds 4 bytes per weight: in a wide layer it
is the largest tensor of the step (4 MiB for 1024 x 1024, next to 1 MiB of int8 codes).
Kept as the factors instead (``E.T`` and ``X`` as int8, 1 byte per activation each), it
is recomputed in blocks of output rows whenever it is read: the optimizer's statistics
pass and its write pass each run the GEMM once, block by block, so no whole accumulator
ever exists. The products are the same exact integers, so the update is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from apt_core.kernels.matmul import int8_mm

#: Bytes of int32 accumulator per block of rows (bounds the transient of one read).
BLOCK_BYTES = 1 << 20

#: Accumulators smaller than this are computed whole in backward (not worth deferring).
DEFER_BYTES = 1 << 20


class DeferredGrad:
    """``E.T @ X`` as int8 factors: ``et`` is ``(N, M)`` contiguous, ``x`` is ``(M, K)``.

    Parameters
    ----------
    et : Tensor
        The transposed error codes, one row per output row of the gradient.
    x : Tensor
        The input codes.
    """

    def __init__(self, et: Tensor, x: Tensor) -> None:
        self.et = et
        self.x = x
        self.shape = (et.shape[0], x.shape[1])

    def block_rows(self) -> int:
        """Rows per block, so that one block's accumulator is about ``BLOCK_BYTES``."""
        return max(1, min(self.shape[0], BLOCK_BYTES // (4 * self.shape[1])))

    def blocks(self) -> Iterator[tuple[int, int, Tensor]]:
        """``(r0, r1, int32 rows r0:r1 of dW)`` for consecutive row blocks."""
        step = self.block_rows()
        for r0 in range(0, self.shape[0], step):
            r1 = min(r0 + step, self.shape[0])
            yield r0, r1, int8_mm(self.et[r0:r1], self.x)

    def materialize(self) -> Tensor:
        """The whole int32 accumulator (for inspection and gradient accumulation)."""
        return int8_mm(self.et, self.x)


def linear_weight_grad(gq: Tensor, xq: Tensor) -> Tensor | DeferredGrad:
    """``gq.T @ xq`` of ``(M, N)`` and ``(M, K)`` codes: deferred when it is large."""
    if gq.shape[1] * xq.shape[1] * 4 < DEFER_BYTES:
        return int8_mm(gq.t(), xq)
    return DeferredGrad(gq.t().contiguous(), xq)


def as_tensor(grad: Tensor | DeferredGrad) -> Tensor:
    """The gradient as a tensor (materialized when deferred)."""
    return grad.materialize() if isinstance(grad, DeferredGrad) else grad


def bias_grad(gq: Tensor) -> Tensor:
    """Exact int32 column sums of ``(M, N)`` codes, as a ones-row GEMM.

    ``sum(dtype=int32)`` converts the whole int8 matrix to int32 first; the GEMM reads
    the codes as they are.
    """
    return int8_mm(torch.ones((1, gq.shape[0]), dtype=torch.int8), gq).view(-1)
