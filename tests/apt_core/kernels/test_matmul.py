"""The exact int8 GEMM: both engines against an int64 reference, on every edge case."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from apt_core.kernels import matmul
from apt_core.kernels.backend import BackendError
from apt_core.kernels.matmul import get_gemm, int8_mm, probe_times, set_gemm


@pytest.fixture(params=["int8", "fp32"])
def engine(request: pytest.FixtureRequest) -> Iterator[str]:
    set_gemm(request.param)
    yield request.param
    set_gemm("auto")


def _reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a.to(torch.int64) @ b.to(torch.int64)


def _codes(shape: tuple[int, int], seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(-128, 128, shape, dtype=torch.int8, generator=gen)


@pytest.mark.parametrize(
    ("m", "k", "n"),
    [(1, 5, 7), (3, 1, 4), (17, 1023, 9), (8, 1024, 5), (6, 1025, 3), (5, 3000, 11)],
)
def test_random_products_are_exact(engine: str, m: int, k: int, n: int) -> None:
    a, b = _codes((m, k), 1), _codes((k, n), 2)
    out = int8_mm(a, b)
    assert out.dtype == torch.int32
    assert torch.equal(out.to(torch.int64), _reference(a, b))


def test_worst_case_sums_are_exact(engine: str) -> None:
    # every product is (-128)(-128) = 2**14: the float32 partial sums reach 2**24 at K = 1024
    # and would round past it, the int32 total reaches 2**14 * 3000
    a = torch.full((4, 3000), -128, dtype=torch.int8)
    b = torch.full((3000, 6), -128, dtype=torch.int8)
    b[::2] = 127
    assert torch.equal(int8_mm(a, b).to(torch.int64), _reference(a, b))


def test_transposed_and_single_row_operands(engine: str) -> None:
    a, b = _codes((9, 1), 3), _codes((300, 9), 4)
    cases = ((a.t(), b.t()), (b.t()[:1], _codes((300, 5), 5)), (b[:, :4].t(), b[:, 4:9]))
    for left, right in cases:
        assert torch.equal(int8_mm(left, right).to(torch.int64), _reference(left, right))


def test_out_and_small_blocks(engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(matmul, "FLOAT_BLOCK_ELEMENTS", 64)  # many row and column blocks
    a, b = _codes((13, 1500), 6), _codes((1500, 21), 7)
    out = torch.full((13, 21), 7, dtype=torch.int32)
    assert int8_mm(a, b, out) is out
    assert torch.equal(out.to(torch.int64), _reference(a, b))


def test_reduction_past_int32_returns_int64(engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(matmul, "INT32_EXACT_REDUCTION", 100)
    a, b = _codes((3, 250), 8), _codes((250, 4), 9)
    out = int8_mm(a, b)
    assert out.dtype == torch.int64
    assert torch.equal(out, _reference(a, b))


def test_unknown_engine_is_refused_by_name() -> None:
    with pytest.raises(BackendError, match="gemm='int4'"):
        set_gemm("int4")


def test_auto_picks_the_faster_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(matmul, "cpu_has_int8_dot", lambda: None)  # no flags: timing decides
    times = probe_times(16, 64, 16, repeats=1)
    assert set(times) == {"int8", "fp32"} and all(t > 0 for t in times.values())
    monkeypatch.setattr(matmul, "probe_times", lambda: {"int8": 2.0, "fp32": 1.0})
    set_gemm("auto")
    assert get_gemm() == "fp32"
    monkeypatch.setattr(matmul, "probe_times", lambda: {"int8": 1.0, "fp32": 2.0})
    set_gemm("auto")
    assert get_gemm() == "int8"
    set_gemm("auto")


def test_auto_takes_int8_where_the_cpu_has_int8_dot_products(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: a timing that (as on a busy machine) favours fp32
    monkeypatch.setattr(matmul, "cpu_has_int8_dot", lambda: True)
    monkeypatch.setattr(matmul, "probe_times", lambda: {"int8": 2.0, "fp32": 1.0})

    # Execute / Assert
    set_gemm("auto")
    assert get_gemm() == "int8"
    monkeypatch.setattr(matmul, "cpu_has_int8_dot", lambda: False)
    set_gemm("auto")
    assert get_gemm() == "fp32"
    set_gemm("auto")


@pytest.mark.parametrize(
    "text,expected",
    [
        ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n", True),
        ("flags\t\t: fpu sse2 avx2 avx_vnni\n", True),
        ("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n", False),
        ("processor\t: 0\nFeatures\t: fp asimd\n", None),
    ],
)
def test_cpu_int8_dot_flags_read_from_cpuinfo(tmp_path: Path, text: str, expected: bool) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)
    assert matmul.cpu_has_int8_dot(cpuinfo) is expected
    assert matmul.cpu_has_int8_dot(tmp_path / "absent") is None
