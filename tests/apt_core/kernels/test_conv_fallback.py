"""APT convolutions on a CPU without a fast int8 GEMM: the emulation, counted and logged."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from torch import nn

from apt_core.kernels.matmul import set_gemm, set_int_conv
from apt_core.layers import APTConv2d
from tests.apt_core.kernels.test_equivalence_layers import _randn, _run
from tests.utils.backends import fixed_policy_at


@pytest.mark.usefixtures("fresh_fallback_log")
def test_conv_takes_the_emulation_without_a_fast_int8_gemm(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Prepare: the float32-carried engine, integer convolutions not forced
    torch.manual_seed(0)
    layer = APTConv2d.from_float(nn.Conv2d(3, 4, 3, padding=1), fixed_policy_at(8))
    x, gy = _randn(2, 3, 6, 6, seed=1), _randn(2, 4, 6, 6, seed=2)
    set_gemm("fp32")
    set_int_conv(False)
    try:
        # Execute
        with caplog.at_level(logging.WARNING, logger="apt_core.kernels.backend"):
            ref = _run(copy.deepcopy(layer), "reference", x, gy)
            int_layer = copy.deepcopy(layer)
            got = _run(int_layer, "int", x, gy)
            _run(int_layer, "int", x, gy)
    finally:
        set_gemm("auto")
        set_int_conv(True)

    # Assert: the emulation's results, counted per call, logged once with the reason
    for key, want in ref.items():
        torch.testing.assert_close(got[key], want, rtol=0, atol=0, msg=key)
    assert int_layer.fallbacks == 2
    assert len([r for r in caplog.records if "no fast int8 GEMM" in r.getMessage()]) == 1
