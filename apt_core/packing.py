"""Bit-packing of integer codes at exactly b bits per value, and the model wire format."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from apt_core.errors import PackError


def packed_nbytes(numel: int, bits: int) -> int:
    """Bytes that ``numel`` codes take at ``bits`` bits each."""
    return (numel * bits + 7) // 8


def pack_bits(codes: Tensor, bits: int) -> Tensor:
    """Pack signed integer codes into a uint8 bit stream, ``bits`` bits per code.

    Codes are stored offset-binary (``q + 2**(bits-1)``), least significant bit first.
    ``bits`` 8 and 16 take a byte-aligned fast path with the same layout.
    """
    flat = codes.reshape(-1).to(torch.int32)
    offset = 1 << (bits - 1)
    u = flat + offset
    if bits == 8:
        return u.to(torch.uint8)
    if bits == 16:
        lo = (u & 0xFF).to(torch.uint8)
        hi = (u >> 8).to(torch.uint8)
        return torch.stack((lo, hi), dim=1).reshape(-1)
    # numpy's C bit (un)packing is an order of magnitude faster than torch bit matrices
    bitmat = np.unpackbits(
        u.numpy().astype("<u2").view(np.uint8).reshape(-1, 2), axis=1, bitorder="little"
    )[:, :bits]
    return torch.from_numpy(np.packbits(bitmat.reshape(-1), bitorder="little"))


def unpack_bits(packed: Tensor, bits: int, numel: int) -> Tensor:
    """Inverse of :func:`pack_bits`: ``numel`` signed codes as int32."""
    need = packed_nbytes(numel, bits)
    if packed.numel() < need:
        raise PackError(
            f"packed buffer holds {packed.numel()} bytes; {numel} codes at {bits} bits need {need}."
        )
    offset = 1 << (bits - 1)
    if bits == 8:
        return packed[:numel].to(torch.int32) - offset
    if bits == 16:
        pair = packed[: 2 * numel].view(-1, 2).to(torch.int32)
        return (pair[:, 0] | (pair[:, 1] << 8)) - offset
    bitmat = np.unpackbits(packed[:need].numpy(), count=numel * bits, bitorder="little").reshape(
        numel, bits
    )
    by = np.packbits(bitmat, axis=1, bitorder="little")
    u = by[:, 0] if bits <= 8 else np.ascontiguousarray(by).view("<u2")[:, 0]
    return torch.from_numpy(u.astype(np.int32)) - offset


# --- model wire format -------------------------------------------------------------
# header: magic b"APTF", u16 version, u16 tensor count; per tensor: u16 name length,
# name (utf-8), u8 bits, i16 exponent, u8 ndim, ndim * u32 dims; then every tensor's
# packed codes back to back, in header order.
MAGIC = b"APTF"
FORMAT_VERSION = 1
_HEAD = struct.Struct("<4sHH")
_ENTRY = struct.Struct("<BhB")


@dataclass(frozen=True)
class PackedTensor:
    """One fixed-point tensor: integer codes, bit-width and exponent."""

    name: str
    codes: Tensor  # int32, real shape
    bits: int
    exponent: int


def pack_tensors(tensors: list[PackedTensor]) -> bytes:
    """Serialize fixed-point tensors: small header, then exactly-b-bit code streams."""
    head = [_HEAD.pack(MAGIC, FORMAT_VERSION, len(tensors))]
    bodies = []
    for t in tensors:
        name = t.name.encode()
        head.append(struct.pack("<H", len(name)) + name)
        head.append(_ENTRY.pack(t.bits, t.exponent, t.codes.dim()))
        head.append(struct.pack(f"<{t.codes.dim()}I", *t.codes.shape))
        bodies.append(pack_bits(t.codes, t.bits).numpy().tobytes())
    return b"".join(head + bodies)


def unpack_tensors(payload: bytes) -> list[PackedTensor]:
    """Parse :func:`pack_tensors` output; raises :class:`PackError` naming what is wrong."""
    if len(payload) < _HEAD.size:
        raise PackError(f"payload of {len(payload)} bytes is shorter than the header.")
    magic, version, count = _HEAD.unpack_from(payload, 0)
    if magic != MAGIC:
        raise PackError(f"magic={magic!r} is not {MAGIC!r}.")
    if version != FORMAT_VERSION:
        raise PackError(f"format version={version} is not supported (expected {FORMAT_VERSION}).")
    pos = _HEAD.size
    entries: list[tuple[str, int, int, tuple[int, ...]]] = []
    try:
        for _ in range(count):
            (nlen,) = struct.unpack_from("<H", payload, pos)
            pos += 2
            name = payload[pos : pos + nlen].decode()
            pos += nlen
            bits, exponent, ndim = _ENTRY.unpack_from(payload, pos)
            pos += _ENTRY.size
            shape = struct.unpack_from(f"<{ndim}I", payload, pos)
            pos += 4 * ndim
            if not 2 <= bits <= 16:
                raise PackError(f"tensor '{name}': bits={bits} is outside [2, 16].")
            entries.append((name, bits, exponent, tuple(shape)))
    except (struct.error, UnicodeDecodeError) as exc:
        raise PackError(f"header is truncated or corrupt ({exc}).") from None
    out = []
    for name, bits, exponent, shape in entries:
        numel = 1
        for d in shape:
            numel *= d
        n = packed_nbytes(numel, bits)
        if pos + n > len(payload):
            raise PackError(
                f"tensor '{name}': payload truncated ({len(payload) - pos} bytes left, {n} needed)."
            )
        buf = torch.frombuffer(bytearray(payload[pos : pos + n]), dtype=torch.uint8)
        codes = unpack_bits(buf, bits, numel).reshape(shape)
        out.append(PackedTensor(name, codes, bits, exponent))
        pos += n
    if pos != len(payload):
        raise PackError(f"payload has {len(payload) - pos} trailing bytes after the last tensor.")
    return out


def header_nbytes(tensors: list[PackedTensor]) -> int:
    """Size of the header :func:`pack_tensors` writes for these tensors."""
    n = _HEAD.size
    for t in tensors:
        n += 2 + len(t.name.encode()) + _ENTRY.size + 4 * t.codes.dim()
    return n
