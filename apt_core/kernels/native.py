"""Native kernels (C in ``c_update.py``, ``c_step.py``, ``c_elementwise.py``), built at first use.

The optimizer's fused passes, the activation/error quantizer and the GEMM rescales each
run as one loop over memory in C, bit-identical to their torch versions in
:mod:`apt_core.kernels.update`, :mod:`apt_core.kernels.gemm` and
:mod:`apt_core.kernels.compiled` (see ``c_update.py``). Eager torch spends one pass and one
temporary per operation, and an inductor-compiled kernel ~0.15 ms of guard checks per
call, which dominated the optimizer of small and medium layers.

The library is compiled once per machine with ``cc -O3 -march=native -ffp-contract=off``
(no fused multiply-adds, which would round differently from torch) into a cache directory
(``APT_NATIVE_CACHE``, default ``~/.cache/aptfleet/native``) keyed by the source, the
flags and the CPU, and loaded with ctypes: no Python or torch headers, about a second of
compilation. Without a working compiler, or with ``APT_NATIVE=0``, every caller uses its
torch kernels instead and this is logged once.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from torch import Tensor

from apt_core.kernels import c_elementwise, c_step, c_update
from apt_core.kernels.backend import log_once

FLAGS = (
    "-O3",
    "-march=native",
    "-ffp-contract=off",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-shared",
    "-fPIC",
)

_P, _I64, _I32, _F32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_float
_F64 = ctypes.c_double
_PASS: list[object] = [_P, _P, _P, _I32, _P, _P, _P, _I32, _I64, _I32, _I32, _P, _P, _P]
_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "aptk_one_pass": (None, [*_PASS, _P, _P]),
    "aptk_write_pass": (_I64, _PASS),
    "aptk_step": (
        _I32,
        [_I64, _P, _P, _F64, _F64, _F64, _I32, _I32, _P, _P, _P, _P, _P, _P],
    ),
    "aptk_amax": (_F32, [_P, _I64]),
    "aptk_quantize": (None, [_P, _I64, _F32, _F32, _F32, _P]),
    "aptk_rescale": (None, [_P, _I32, _I64, _F32, _P, _I64, _I64, _P]),
    "aptk_combine": (None, [_P, _I64, _P, _I64, _P, _I64, _I64, _I64, _F32, _P, _P]),
    "aptk_relu": (None, [_P, _I64, _P, _P]),
    "aptk_gather6": (None, [_P, _P, _P, _P]),
    "aptk_relu_grad": (None, [_P, _P, _I64, _P]),
    "aptk_im2col": (_I32, [_P, _P, _P]),
    "aptk_relu_bits": (None, [_P, _I64, _P, _P]),
    "aptk_relu_grad_bits": (None, [_P, _P, _I64, _P]),
    "aptk_channel_sums": (None, [_P, _I64, _I64, _I64, _I64, _I64, _I64, _P]),
}

_state: dict[str, object] = {"enabled": os.environ.get("APT_NATIVE", "1") != "0", "lib": None}


class _Unavailable:
    """Why the library could not be built (kept so that the build is tried only once)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def set_native(enabled: bool) -> None:
    """Use the native kernels where they apply (default) or always the torch ones."""
    _state["enabled"] = enabled


def lib() -> ctypes.CDLL | None:
    """The loaded library, building it on first use; None when disabled or unavailable."""
    if not _state["enabled"]:
        return None
    loaded = _state["lib"]
    if loaded is None:
        loaded = _load()
        _state["lib"] = loaded
    return loaded if isinstance(loaded, ctypes.CDLL) else None


def status() -> str:
    """``"native"``, ``"disabled"`` or the reason the library is unavailable."""
    if not _state["enabled"]:
        return "disabled"
    if lib() is not None:
        return "native"
    return f"unavailable: {getattr(_state['lib'], 'reason', '?')}"


def _cpu_key() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    except OSError:
        flags = ""
    return platform.machine() + flags


def _load() -> ctypes.CDLL | _Unavailable:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return _give_up("no C compiler (cc/gcc) on PATH")
    src = (c_update.SOURCE + c_step.SOURCE + c_elementwise.SOURCE).encode()
    key = hashlib.sha256(src + " ".join((cc, *FLAGS, _cpu_key())).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("APT_NATIVE_CACHE", Path.home() / ".cache/aptfleet/native"))
    target = cache / f"aptk-{key}.so"
    try:
        if not target.exists():
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                built, code = Path(tmp) / "aptk.so", Path(tmp) / "aptk.c"
                code.write_bytes(src)
                subprocess.run(
                    [cc, *FLAGS, "-o", str(built), str(code), "-lm"],
                    check=True,
                    capture_output=True,
                    timeout=120,
                )
                os.replace(built, target)  # atomic: concurrent builders are harmless
        loaded = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        return _give_up(f"{exc} {detail.decode(errors='replace')[:300]}".strip())
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(loaded, name)
        fn.restype, fn.argtypes = restype, argtypes
    return loaded


def _give_up(reason: str) -> _Unavailable:
    log_once(
        "native",
        "APT's native kernels are unavailable (%s); using the torch kernels instead.",
        reason,
    )
    return _Unavailable(reason)


def dense(t: Tensor) -> bool:
    """True when ``t`` covers its storage densely (any order of dimensions, no gaps).

    Element-wise kernels then run over the storage in memory order, and outputs made with
    ``torch.empty_like`` (which keeps a dense tensor's strides) line up element for element.
    """
    if t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)):
        return True
    dims = sorted(
        ((st, sz) for st, sz in zip(t.stride(), t.shape, strict=True) if sz != 1), reverse=True
    )
    expected = 1
    for st, sz in reversed(dims):
        if st != expected:
            return False
        expected *= sz
    return True


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None or t.numel() == 0 else t.data_ptr()


def amax(x: Tensor) -> float:
    """max|x| of a dense float32 tensor (NaN when any value is NaN)."""
    return float(lib().aptk_amax(x.data_ptr(), x.numel()))  # type: ignore[union-attr]


def quantize(x: Tensor, scale: float, lo: float, hi: float) -> Tensor:
    """int8 ``min(max(round(x * scale), lo), hi)`` of a dense float32 tensor (same strides)."""
    out = torch.empty_like(x, dtype=torch.int8)
    lib().aptk_quantize(x.data_ptr(), x.numel(), scale, lo, hi, out.data_ptr())  # type: ignore[union-attr]
    return out


def rescale(acc: Tensor, scale: float, bias: Tensor | None = None, inner: int = 1) -> Tensor:
    """float32 ``acc * scale (+ bias over channels)``, in place for an int32 ``acc``.

    ``acc`` is dense int32 or float32; the bias (C channels) broadcasts over its storage
    laid out as ``(..., C, inner)`` (``inner`` 1 when the channels are innermost). An int32
    ``acc`` is overwritten: its storage becomes the result, with the same strides.
    """
    out = acc.view(torch.float32) if acc.dtype == torch.int32 else torch.empty_like(acc)
    channels = 1 if bias is None else bias.numel()
    lib().aptk_rescale(  # type: ignore[union-attr]
        acc.data_ptr(), int(acc.dtype == torch.float32), acc.numel(), scale,
        _ptr(bias), inner, channels, out.data_ptr(),
    )  # fmt: skip
    return out


def combine(
    hi: Tensor, lo: Tensor, row_sums: Tensor, scale: float = 1.0, bias: Tensor | None = None
) -> Tensor:
    """float32 ``(256 * hi + lo + 128 * row_sums) * scale (+ bias)`` of int32 ``(m, n)``.

    ``hi`` and ``lo`` may be column slices of one accumulator (unit column stride), and
    ``row_sums`` (m values) a column of it.
    """
    m, n = hi.shape
    out = torch.empty((m, n), dtype=torch.float32)
    lib().aptk_combine(  # type: ignore[union-attr]
        hi.data_ptr(), hi.stride(0), lo.data_ptr(), lo.stride(0), row_sums.data_ptr(),
        row_sums.stride(0), m, n, scale, _ptr(bias), out.data_ptr(),
    )  # fmt: skip
    return out


def relu(x: Tensor) -> tuple[Tensor, Tensor]:
    """``torch.relu(x)`` of a dense float32 tensor and its uint8 mask ``relu(x) != 0``.

    Both results have ``x``'s strides.
    """
    y = torch.empty_like(x)
    mask = torch.empty_like(x, dtype=torch.uint8)
    lib().aptk_relu(x.data_ptr(), x.numel(), y.data_ptr(), mask.data_ptr())  # type: ignore[union-attr]
    return y, mask


def relu_grad(g: Tensor, mask: Tensor) -> Tensor:
    """``g`` where ``mask`` (uint8) is set and +0 elsewhere (g float32).

    Both must be dense with the same strides; otherwise both are made contiguous first.
    """
    if not (dense(g) and g.stride() == mask.stride()):
        g, mask = g.contiguous(), mask.contiguous()
    out = torch.empty_like(g)
    lib().aptk_relu_grad(g.data_ptr(), mask.data_ptr(), g.numel(), out.data_ptr())  # type: ignore[union-attr]
    return out


def gather_into(dst: Tensor, src: Tensor) -> bool:
    """Copy a 6-d int8 view with a contiguous innermost dimension into contiguous ``dst``.

    Returns False (copying nothing) when the native library is off or the view does not
    qualify; the caller then copies with torch.
    """
    if (
        lib() is None
        or src.dim() != 6
        or src.dtype != torch.int8
        or src.stride(5) != 1
        or not dst.is_contiguous()
        or dst.numel() != src.numel()
    ):
        return False
    shape = (ctypes.c_int64 * 6)(*src.shape)
    stride = (ctypes.c_int64 * 6)(*src.stride())
    lib().aptk_gather6(  # type: ignore[union-attr]
        src.data_ptr(), ctypes.addressof(shape), ctypes.addressof(stride), dst.data_ptr()
    )
    return True


class Im2col:
    """``aptk_im2col`` for one source layout and geometry, its arguments prepared once.

    A convolution calls it once per chunk; building the ctypes arguments each time cost
    about as much as gathering a small chunk.

    Parameters
    ----------
    src : Tensor
        ``(images, H, W, C)`` int8 with contiguous channels: the layout of every source
        passed to :meth:`run` (its image count may differ).
    geometry : tuple[int, ...]
        ``(Wo, kh, kw, stride_h, stride_w, dilation_h, dilation_w, top, left, sy, sx)``
        (see ``aptk_im2col`` in ``c_elementwise.SOURCE``).
    """

    def __init__(self, src: Tensor, geometry: tuple[int, ...]) -> None:
        _, h, w, c = src.shape
        if src.dtype != torch.int8 or (c > 1 and src.stride(3) != 1) or len(geometry) != 11:
            raise ValueError(
                f"Im2col needs int8 NHWC codes with contiguous channels and 11 geometry "
                f"values, got {src.dtype} {tuple(src.shape)} strides {src.stride()}, "
                f"geometry {geometry}."
            )
        wo, kh, kw = geometry[:3]
        self._row = kh * kw * c
        self._wo = wo
        self._args = (ctypes.c_int64 * 20)(
            0, 0, 0, wo, h, w, c, src.stride(0), src.stride(1), src.stride(2), *geometry[1:]
        )
        self._fn = lib().aptk_im2col  # type: ignore[union-attr]

    def run(self, dst: Tensor, src_ptr: int, images: int, h0: int, h1: int) -> None:
        """Write the rows of output rows ``h0:h1`` of ``images`` images into contiguous ``dst``.

        ``src_ptr`` addresses the first image, laid out as the constructor's ``src``.
        """
        if dst.numel() != images * (h1 - h0) * self._wo * self._row or not dst.is_contiguous():
            raise ValueError(
                f"Im2col.run needs a contiguous dst of {images * (h1 - h0) * self._wo} rows of "
                f"{self._row}, got {tuple(dst.shape)} with strides {dst.stride()}."
            )
        args = self._args
        args[0], args[1], args[2] = images, h0, h1
        if self._fn(src_ptr, ctypes.addressof(args), dst.data_ptr()) != 0:
            raise MemoryError("aptk_im2col: no memory for its table of column offsets")


def combine_rows(
    acc: Tensor, channels: int, scale: float, bias: Tensor | None, out: Tensor
) -> None:
    """:func:`combine` of contiguous int32 ``(m, 2 * channels + 1)`` rows into ``out``.

    The columns are the high limbs' products, the low limbs', then the offset sums; ``out``
    is contiguous float32 ``(m, channels)``. One call per chunk of a streamed convolution,
    without the three column views :func:`combine` takes.
    """
    m, width = acc.shape
    if (
        width != 2 * channels + 1
        or acc.dtype != torch.int32
        or not acc.is_contiguous()
        or out.shape != (m, channels)
        or out.dtype != torch.float32
        or not out.is_contiguous()
    ):
        raise ValueError(
            f"combine_rows needs contiguous int32 ({m}, {2 * channels + 1}) and float32 "
            f"({m}, {channels}), got {acc.dtype} {tuple(acc.shape)} and {out.dtype} "
            f"{tuple(out.shape)}."
        )
    p = acc.data_ptr()
    lib().aptk_combine(  # type: ignore[union-attr]
        p, width, p + 4 * channels, width, p + 8 * channels, width, m, channels, scale,
        _ptr(bias), out.data_ptr(),
    )  # fmt: skip


def channel_sums(codes: Tensor) -> Tensor | None:
    """int32 sums over all but dimension 1 of 3-d or 4-d int8 ``codes`` (wrapping like torch).

    Returns None (summing nothing) when ``codes`` is neither contiguous nor channels_last;
    the caller then sums with torch.
    """
    if codes.dtype != torch.int8 or codes.dim() not in (3, 4):
        return None
    c = codes.shape[1]
    inner = codes.numel() // max(1, codes.shape[0] * c)
    if codes.is_contiguous():  # (N, C, spatial)
        shape = (codes.shape[0], c, inner, c * inner, inner, 1)
    elif codes.movedim(1, -1).is_contiguous():  # channels innermost
        shape = (codes.shape[0] * inner, c, 1, c, 1, 1)
    else:
        return None
    out = torch.empty(c, dtype=torch.int32)
    lib().aptk_channel_sums(codes.data_ptr(), *shape, out.data_ptr())  # type: ignore[union-attr]
    return out


def relu_bits(x: Tensor) -> tuple[Tensor, Tensor]:
    """``torch.relu(x)`` of a dense float32 tensor and its mask packed 8 to a byte.

    Bit ``i % 8`` of byte ``i // 8`` is ``relu(x) != 0`` for the ``i``-th element in
    storage order; the output has ``x``'s strides.
    """
    y = torch.empty_like(x)
    bits = torch.empty((x.numel() + 7) // 8, dtype=torch.uint8)
    lib().aptk_relu_bits(x.data_ptr(), x.numel(), y.data_ptr(), bits.data_ptr())  # type: ignore[union-attr]
    return y, bits


def relu_grad_bits(g: Tensor, bits: Tensor) -> Tensor:
    """``g`` where the packed mask of :func:`relu_bits` is set and +0 elsewhere.

    ``g`` must be dense float32 laid out as the ReLU's input was (same strides).
    """
    out = torch.empty_like(g)
    lib().aptk_relu_grad_bits(g.data_ptr(), bits.data_ptr(), g.numel(), out.data_ptr())  # type: ignore[union-attr]
    return out
