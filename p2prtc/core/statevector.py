"""Yjs state vectors as dicts: the byte encoding's client order is not canonical."""

from __future__ import annotations

StateVector = dict[int, int]


class MalformedStateVector(ValueError):
    """Bytes that are not a Yjs state vector."""


def _read_var_uint(data: bytes, offset: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if offset >= len(data) or shift > 63:
            raise MalformedStateVector("truncated or oversized varint")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, offset
        shift += 7


def _write_var_uint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_state_vector(data: bytes) -> StateVector:
    """client id -> number of items seen from it."""
    count, offset = _read_var_uint(data, 0)
    vector: StateVector = {}
    for _ in range(count):
        client, offset = _read_var_uint(data, offset)
        clock, offset = _read_var_uint(data, offset)
        vector[client] = clock
    return vector


def encode_state_vector(vector: StateVector) -> bytes:
    parts = [_write_var_uint(len(vector))]
    for client, clock in sorted(vector.items()):
        parts.append(_write_var_uint(client) + _write_var_uint(clock))
    return b"".join(parts)
