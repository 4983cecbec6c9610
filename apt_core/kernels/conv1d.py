"""1-d integer convolution: the 2-d im2col kernels on ``(N, C, L)`` codes viewed with ``H = 1``."""

from __future__ import annotations

from torch import Tensor

from apt_core.kernels.conv_geometry import _check, weight_from_matrix
from apt_core.kernels.conv_weight_grad import conv2d_weight_grad_int
from apt_core.kernels.im2col import conv2d_forward_int, conv2d_input_grad_int


def weight_from_matrix1d(mat: Tensor, channels: int, k: int) -> Tensor:
    """Inverse of ``weight_matrix`` for 1-d weights: ``(O, k*C)`` back to ``(O, C, k)``."""
    return weight_from_matrix(mat, channels, 1, k).squeeze(2)


def conv1d_forward_int(
    x: Tensor,
    w_mat: Tensor,
    kernel: int,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    *,
    groups: int = 1,
    chunk_rows: int | None = None,
) -> Tensor:
    """``conv2d_forward_int`` for ``(N, C, L)`` codes; returns ``(N, O, Lo)``."""
    _check(x, "x", groups, dim=3)
    return conv2d_forward_int(
        x.unsqueeze(2),
        w_mat,
        (1, kernel),
        (1, stride),
        (0, padding),
        (1, dilation),
        chunk_rows=chunk_rows,
    ).squeeze(2)


def conv1d_input_grad_int(
    e: Tensor,
    w_mat: Tensor,
    input_len: int,
    kernel: int,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    *,
    groups: int = 1,
    chunk_rows: int | None = None,
) -> Tensor:
    """``conv2d_input_grad_int`` for ``(N, O, Lo)`` error codes; returns ``(N, C, L)``."""
    _check(e, "e", groups, dim=3)
    return conv2d_input_grad_int(
        e.unsqueeze(2),
        w_mat,
        (1, input_len),
        (1, kernel),
        (1, stride),
        (0, padding),
        (1, dilation),
        chunk_rows=chunk_rows,
    ).squeeze(2)


def conv1d_weight_grad_int(
    e: Tensor,
    x: Tensor,
    kernel: int,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    *,
    groups: int = 1,
    chunk_rows: int | None = None,
) -> Tensor:
    """``conv2d_weight_grad_int`` for 1-d codes; returns ``(O, k*C)``."""
    _check(e, "e", groups, dim=3)
    _check(x, "x", groups, dim=3)
    return conv2d_weight_grad_int(
        e.unsqueeze(2),
        x.unsqueeze(2),
        (1, kernel),
        (1, stride),
        (0, padding),
        (1, dilation),
        chunk_rows=chunk_rows,
    )
