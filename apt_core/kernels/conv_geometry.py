"""Geometry of the integer convolutions: argument checks and the GEMM-ready weight order.

A weight ``(O, C, kh, kw)`` (or ``(O, C, k)``) is stored as the ``(O, kh*kw*C)`` matrix
:func:`weight_matrix` makes (columns over kernel row, kernel column, channel: one NHWC
im2col row per output pixel, see :mod:`apt_core.kernels.im2col`).
"""

from __future__ import annotations

import torch
from torch import Tensor

IntPair = int | tuple[int, int]


class ConvGroupsError(ValueError):
    """Raised for grouped convolutions, which the integer kernels do not implement."""


class ConvArgumentError(ValueError):
    """Raised when codes or geometry do not describe a valid convolution."""


def _pair(value: IntPair, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    pair = tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ConvArgumentError(f"Parameter {name} must be an int or two ints, got {value!r}.")
    return pair[0], pair[1]


def _geometry(
    kernel: IntPair, stride: IntPair, padding: IntPair, dilation: IntPair
) -> tuple[tuple[int, int], ...]:
    """``(kernel, stride, padding, dilation)`` as validated int pairs."""
    pairs = (
        _pair(kernel, "kernel"),
        _pair(stride, "stride"),
        _pair(padding, "padding"),
        _pair(dilation, "dilation"),
    )
    if min(pairs[0] + pairs[1] + pairs[3]) < 1 or min(pairs[2]) < 0:
        raise ConvArgumentError(
            f"Kernel, stride and dilation must be positive and padding non-negative, got "
            f"kernel={kernel}, stride={stride}, padding={padding}, dilation={dilation}."
        )
    return pairs


def _out_size(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _check(tensor: Tensor, name: str, groups: int, dim: int = 4) -> None:
    if groups != 1:
        raise ConvGroupsError(f"The integer kernels support only groups=1, got groups={groups}.")
    if tensor.dtype != torch.int8 or tensor.dim() != dim:
        got = f"{tensor.dim()}-d {tensor.dtype}"
        raise ConvArgumentError(f"Codes {name} are {got}, not {dim}-d int8.")


def weight_matrix(w: Tensor) -> Tensor:
    """GEMM-ready ``(O, kh*kw*C)`` matrix of a ``(O, C, kh, kw)`` or ``(O, C, k)`` weight.

    The dtype is kept: int8 codes give the operand of the ``*_int`` kernels.
    """
    w = w.unsqueeze(2) if w.dim() == 3 else w
    if w.dim() != 4:
        raise ConvArgumentError(f"A conv weight must be 3-d or 4-d, got shape {tuple(w.shape)}.")
    return w.permute(0, 2, 3, 1).reshape(w.shape[0], -1).contiguous()


def weight_from_matrix(mat: Tensor, channels: int, kh: int, kw: int) -> Tensor:
    """Inverse of ``weight_matrix``: ``(O, kh*kw*C)`` back to ``(O, C, kh, kw)`` (contiguous)."""
    if mat.dim() != 2 or mat.shape[1] != kh * kw * channels:
        raise ConvArgumentError(
            f"A weight matrix for C={channels}, kernel=({kh}, {kw}) needs {kh * kw * channels} "
            f"columns, got shape {tuple(mat.shape)}."
        )
    return mat.reshape(mat.shape[0], kh, kw, channels).permute(0, 3, 1, 2).contiguous()
