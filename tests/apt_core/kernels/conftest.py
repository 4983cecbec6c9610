"""The kernel tests exercise the integer convolutions on every CPU.

On a CPU without a fast int8 GEMM, APT's conv layers otherwise take the float emulation
(:func:`apt_core.kernels.matmul.int_conv_unsupported`), and the integer conv kernels
would go untested there.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from apt_core.kernels import backend as backend_state
from apt_core.kernels.matmul import set_int_conv


@pytest.fixture(autouse=True)
def _integer_convolutions() -> Iterator[None]:
    set_int_conv(True)
    yield
    set_int_conv(False)


@pytest.fixture
def fresh_fallback_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget which fallback reasons this process has logged already."""
    monkeypatch.setattr(backend_state, "_logged", set())
