"""Tests of exact-b-bit code packing and the model wire format in apt_core.packing."""

from __future__ import annotations

import math
import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from apt_core.packing import (
    FORMAT_VERSION,
    MAGIC,
    PackedTensor,
    PackError,
    header_nbytes,
    pack_bits,
    pack_tensors,
    packed_nbytes,
    unpack_bits,
    unpack_tensors,
)

ALL_BITS = tuple(range(2, 17))
LENGTHS = (1, 7, 13, 64, 257)


def _random_codes(n: int, bits: int, seed: int) -> torch.Tensor:
    """Random signed codes of ``bits`` bits that include the minimum and maximum code."""
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(lo, hi + 1, (n,), generator=gen, dtype=torch.int32)
    codes[0] = lo
    if n > 1:
        codes[-1] = hi
    return codes


def _ref_pack(codes: list[int], bits: int) -> bytes:
    """Plain-Python packer: offset binary, least significant bit first, zero padded."""
    offset = 1 << (bits - 1)
    stream = 0
    for i, q in enumerate(codes):
        stream |= (q + offset) << (i * bits)
    return stream.to_bytes(packed_nbytes(len(codes), bits), "little")


def _sample_tensors() -> list[PackedTensor]:
    return [
        PackedTensor("conv.weight", _random_codes(4 * 1 * 3 * 3, 5, 1).view(4, 1, 3, 3), 5, 9),
        PackedTensor("conv.bias", _random_codes(4, 5, 2), 5, -3),
        PackedTensor("head.weight", _random_codes(7 * 13, 11, 3).view(7, 13), 11, -20),
        PackedTensor("head.bias", _random_codes(7, 16, 4), 16, 15),
        PackedTensor("scalar", torch.tensor(-2, dtype=torch.int32), 2, 0),
        PackedTensor("couche.poids_é", _random_codes(9, 8, 5).view(3, 3), 8, -1),
    ]


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("bits", ALL_BITS)
def test_pack_bits_round_trip_exact(bits: int, n: int) -> None:
    # Prepare
    codes = _random_codes(n, bits, seed=bits * 1000 + n)

    # Execute
    packed = pack_bits(codes, bits)
    back = unpack_bits(packed, bits, n)

    # Assert
    assert packed.dtype == torch.uint8
    assert packed.numel() == math.ceil(n * bits / 8) == packed_nbytes(n, bits)
    assert back.dtype == torch.int32
    torch.testing.assert_close(back, codes, rtol=0, atol=0)


@pytest.mark.parametrize("bits", ALL_BITS)
def test_pack_bits_matches_reference_layout(bits: int) -> None:
    # Prepare: odd length so the last byte is padded for most widths
    codes = _random_codes(11, bits, seed=bits)

    # Execute
    packed = pack_bits(codes, bits)

    # Assert
    assert packed.numpy().tobytes() == _ref_pack(codes.tolist(), bits)


def test_pack_bits_four_bit_example() -> None:
    # Prepare: -8 -> 0b0000, 7 -> 0b1111, 0 -> 0b1000 (offset binary, LSB first)
    codes = torch.tensor([-8, 7, 0], dtype=torch.int32)

    # Execute
    packed = pack_bits(codes, 4)

    # Assert
    assert packed.tolist() == [0b1111_0000, 0b0000_1000]


def test_pack_bits_accepts_any_shape() -> None:
    # Prepare
    codes = _random_codes(24, 6, seed=7).view(2, 3, 4)

    # Execute
    back = unpack_bits(pack_bits(codes, 6), 6, 24)

    # Assert
    torch.testing.assert_close(back.view(2, 3, 4), codes, rtol=0, atol=0)


@settings(max_examples=200, deadline=None, database=None)
@given(data=st.data(), bits=st.integers(min_value=2, max_value=16))
def test_pack_bits_round_trip_property(data: st.DataObject, bits: int) -> None:
    # Prepare
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    values = data.draw(st.lists(st.integers(min_value=lo, max_value=hi), min_size=0, max_size=300))
    codes = torch.tensor(values, dtype=torch.int32)

    # Execute
    packed = pack_bits(codes, bits)
    back = unpack_bits(packed, bits, len(values))

    # Assert
    assert packed.numel() == (len(values) * bits + 7) // 8
    assert back.tolist() == values


def test_unpack_bits_short_buffer_raises_pack_error() -> None:
    # Prepare
    packed = pack_bits(_random_codes(10, 5, seed=0), 5)

    # Execute / Assert
    with pytest.raises(PackError, match="10 codes at 5 bits need 7"):
        unpack_bits(packed[:6], 5, 10)


def test_pack_tensors_round_trip() -> None:
    # Prepare
    tensors = _sample_tensors()

    # Execute
    back = unpack_tensors(pack_tensors(tensors))

    # Assert
    assert [t.name for t in back] == [t.name for t in tensors]
    for got, want in zip(back, tensors, strict=True):
        assert got.bits == want.bits
        assert got.exponent == want.exponent
        assert tuple(got.codes.shape) == tuple(want.codes.shape)
        torch.testing.assert_close(got.codes, want.codes, rtol=0, atol=0)


def test_pack_tensors_empty_list_round_trip() -> None:
    # Execute
    payload = pack_tensors([])

    # Assert
    assert payload == MAGIC + struct.pack("<HH", FORMAT_VERSION, 0)
    assert unpack_tensors(payload) == []


def test_pack_tensors_payload_size_is_header_plus_packed_codes() -> None:
    # Prepare
    tensors = _sample_tensors()
    exact_bits = sum(t.codes.numel() * t.bits for t in tensors)

    # Execute
    payload = pack_tensors(tensors)

    # Assert: exactly the header plus ceil(n*b/8) per tensor, i.e. at most the ideal
    # sum(n*b)/8 plus under one padding byte per tensor
    body = sum(packed_nbytes(t.codes.numel(), t.bits) for t in tensors)
    assert len(payload) == header_nbytes(tensors) + body
    assert len(payload) < exact_bits / 8 + header_nbytes(tensors) + len(tensors)


def test_pack_tensors_byte_aligned_payload_within_ideal_size() -> None:
    # Prepare: every n*b is a multiple of 8, so no padding at all
    tensors = [
        PackedTensor("a", _random_codes(16, 3, 1), 3, 2),
        PackedTensor("b", _random_codes(8, 13, 2).view(2, 4), 13, -4),
    ]
    ideal = sum(t.codes.numel() * t.bits for t in tensors) / 8

    # Execute
    payload = pack_tensors(tensors)

    # Assert
    assert len(payload) <= ideal + header_nbytes(tensors)


def test_unpack_tensors_bad_magic_raises_pack_error() -> None:
    # Prepare
    payload = b"XPTF" + pack_tensors(_sample_tensors())[4:]

    # Execute / Assert
    with pytest.raises(PackError, match="magic=b'XPTF'"):
        unpack_tensors(payload)


def test_unpack_tensors_wrong_version_raises_pack_error() -> None:
    # Prepare
    payload = bytearray(pack_tensors(_sample_tensors()))
    struct.pack_into("<H", payload, 4, FORMAT_VERSION + 1)

    # Execute / Assert
    with pytest.raises(PackError, match=f"version={FORMAT_VERSION + 1}"):
        unpack_tensors(bytes(payload))


def test_unpack_tensors_shorter_than_header_raises_pack_error() -> None:
    # Execute / Assert
    with pytest.raises(PackError, match="shorter than the header"):
        unpack_tensors(MAGIC + b"\x01")


def test_unpack_tensors_truncated_header_raises_pack_error() -> None:
    # Prepare: cut inside the second tensor's header entry
    tensors = _sample_tensors()
    payload = pack_tensors(tensors)
    cut = header_nbytes(tensors[:2]) - 3

    # Execute / Assert
    with pytest.raises(PackError, match="header is truncated"):
        unpack_tensors(payload[:cut])


def test_unpack_tensors_truncated_body_raises_pack_error() -> None:
    # Prepare
    payload = pack_tensors(_sample_tensors())

    # Execute / Assert
    with pytest.raises(PackError, match="'couche.poids_é': payload truncated"):
        unpack_tensors(payload[:-1])


def test_unpack_tensors_trailing_bytes_raises_pack_error() -> None:
    # Prepare
    payload = pack_tensors(_sample_tensors()) + b"\x00\x00"

    # Execute / Assert
    with pytest.raises(PackError, match="2 trailing bytes"):
        unpack_tensors(payload)


@pytest.mark.parametrize("bad_bits", (0, 1, 17, 255))
def test_unpack_tensors_bits_out_of_range_raises_pack_error(bad_bits: int) -> None:
    # Prepare: overwrite the bits byte of the first entry (after magic, version, count,
    # name length and name)
    tensors = _sample_tensors()
    payload = bytearray(pack_tensors(tensors))
    bits_at = 8 + 2 + len(tensors[0].name)
    assert payload[bits_at] == tensors[0].bits
    payload[bits_at] = bad_bits

    # Execute / Assert
    with pytest.raises(PackError, match=f"'conv.weight': bits={bad_bits} is outside"):
        unpack_tensors(bytes(payload))
