"""GEMM-ready storage of integer codes: encode/decode round trips and the fast float decode."""

from __future__ import annotations

import pytest
import torch

from apt_core.kernels.storage import decode, decode_float, encode, stored_rows
from apt_core.quant import MAX_EXPONENT, code_range, dequantize


@pytest.mark.parametrize("bits", range(2, 17))
def test_encode_decode_round_trips_every_code_range_end(bits: int) -> None:
    # Prepare: random codes plus both ends of the range, in a (rows, cols) matrix
    lo, hi = code_range(bits)
    codes = torch.randint(lo, hi + 1, (6, 5), generator=torch.Generator().manual_seed(bits))
    codes[0, 0], codes[-1, -1] = lo, hi

    # Execute
    stored = encode(codes, bits)

    # Assert
    assert stored.dtype == torch.int8 and stored.shape == (stored_rows(6, bits), 5)
    assert torch.equal(decode(stored, bits), codes.to(torch.int32))


@pytest.mark.parametrize("exponent", [-20, 0, 7, 15, 60, MAX_EXPONENT])
@pytest.mark.parametrize("bits", [2, 5, 8, 9, 12, 16])
def test_decode_float_equals_dequantize_of_decode_bit_for_bit(bits: int, exponent: int) -> None:
    # Prepare: a bias-shaped (n, 1) tensor of codes covering the range ends
    lo, hi = code_range(bits)
    codes = torch.randint(lo, hi + 1, (33, 1), generator=torch.Generator().manual_seed(bits))
    codes[0], codes[-1] = lo, hi
    stored = encode(codes, bits)

    # Execute
    fast = decode_float(stored, bits, exponent)

    # Assert
    slow = dequantize(decode(stored, bits), exponent).reshape(-1)
    assert fast.dtype == torch.float32
    assert torch.equal(fast, slow)
