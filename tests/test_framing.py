"""Frames and chunks: round trips, limits, and every kind of garbage rejected with a typed error."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2prtc.core.framing import (
    CHUNK_HEADER_SIZE,
    Chunker,
    Frame,
    FrameKind,
    FramingError,
    MessageTooLarge,
    Reassembler,
    UnknownFrameKind,
    UnsupportedVersion,
    decode_frame,
    encode_frame,
    error_frame,
    error_reason,
)
from p2prtc.errors import P2PError

DOC = bytes(range(16))


def chunk(version: int, message_id: int, index: int, count: int, data: bytes) -> bytes:
    return struct.pack("!BIII", version, message_id, index, count) + data


def feed_all(reassembler: Reassembler, chunks: list[bytes]) -> list[Frame]:
    frames = [reassembler.feed(c) for c in chunks]
    return [f for f in frames if f is not None]


@pytest.mark.parametrize(
    "frame",
    [
        Frame(FrameKind.SYNC, DOC, b"\x00\x01\x02"),
        Frame(FrameKind.LEAVE, DOC, b""),
        Frame(FrameKind.AUTH, DOC, b"hello"),
        error_frame("bye: disk full ✗"),
    ],
)
def test_frame_round_trip(frame: Frame) -> None:
    assert decode_frame(encode_frame(frame)) == frame


def test_encoding_is_pinned() -> None:
    assert encode_frame(Frame(FrameKind.SYNC, DOC, b"xy")) == b"\x01\x01" + DOC + b"xy"
    assert encode_frame(error_frame("no")) == b"\x01\x04no"


def test_error_reason_survives_bad_utf8() -> None:
    assert error_reason(Frame(FrameKind.ERROR, b"", b"bad \xff")) == "bad \ufffd"


def test_frame_checks_doc_id_size() -> None:
    with pytest.raises(ValueError, match="16-byte"):
        Frame(FrameKind.SYNC, b"short", b"")
    with pytest.raises(ValueError, match="0-byte"):
        Frame(FrameKind.ERROR, DOC, b"")


def test_unknown_version_is_a_clear_error() -> None:
    with pytest.raises(UnsupportedVersion) as info:
        decode_frame(b"\x02\x01" + DOC)
    assert isinstance(info.value, P2PError)
    assert str(info.value).startswith("The peer speaks an unsupported version")


def test_unknown_kind_is_a_clear_error() -> None:
    with pytest.raises(UnknownFrameKind, match="frame kind 99"):
        decode_frame(b"\x01\x63")


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x01\x01" + DOC[:15]])
def test_truncated_frames_are_rejected(data: bytes) -> None:
    with pytest.raises(FramingError):
        decode_frame(data)


def test_small_frame_is_one_chunk() -> None:
    chunks = Chunker(100).encode(Frame(FrameKind.SYNC, DOC, b"x"))
    assert len(chunks) == 1
    assert feed_all(Reassembler(), chunks) == [Frame(FrameKind.SYNC, DOC, b"x")]


def test_large_frame_is_split_below_the_limit_and_reassembled() -> None:
    frame = Frame(FrameKind.SYNC, DOC, bytes(range(256)) * 300)
    chunks = Chunker(1000).encode(frame)
    assert len(chunks) == -(-len(encode_frame(frame)) // (1000 - CHUNK_HEADER_SIZE))
    assert all(len(c) <= 1000 for c in chunks)
    reassembler = Reassembler()
    assert [reassembler.feed(c) for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert reassembler.feed(chunks[-1]) == frame


def test_progress_names_the_document_and_bounds_the_size_until_the_last_chunk() -> None:
    frame = Frame(FrameKind.SYNC, DOC, bytes(range(256)) * 300)
    size = len(encode_frame(frame))
    chunks = Chunker(1000).encode(frame)
    per_chunk = 1000 - CHUNK_HEADER_SIZE
    reassembler = Reassembler()
    assert reassembler.progress is None
    seen = []
    for chunk in chunks[:-1]:
        reassembler.feed(chunk)
        seen.append(reassembler.progress)
    assert {p.doc_id for p in seen if p} == {DOC}
    assert [p.received for p in seen if p] == [per_chunk * n for n in range(1, len(chunks))]
    assert {p.expected for p in seen if p} == {per_chunk * len(chunks)}
    assert size <= per_chunk * len(chunks) < size + per_chunk
    reassembler.feed(chunks[-1])
    assert reassembler.progress is None


def test_progress_of_a_frame_without_a_document() -> None:
    reassembler = Reassembler()
    reassembler.feed(Chunker(40).encode(error_frame("x" * 100))[0])
    assert reassembler.progress is not None and reassembler.progress.doc_id == b""


def test_consecutive_frames_and_message_ids() -> None:
    chunker, reassembler = Chunker(64), Reassembler()
    frames = [Frame(FrameKind.AUTH, DOC, bytes([n]) * (n * 40)) for n in range(5)]
    wire = [c for f in frames for c in chunker.encode(f)]
    ids = sorted({struct.unpack_from("!BI", c)[1] for c in wire})
    assert ids == [0, 1, 2, 3, 4]
    assert feed_all(reassembler, wire) == frames


def test_chunker_rejects_a_limit_below_its_header() -> None:
    with pytest.raises(ValueError):
        Chunker(CHUNK_HEADER_SIZE)


def test_interleaved_messages_are_rejected() -> None:
    chunker = Chunker(32)
    first = chunker.encode(Frame(FrameKind.SYNC, DOC, b"a" * 50))
    second = chunker.encode(Frame(FrameKind.SYNC, DOC, b"b" * 50))
    reassembler = Reassembler()
    reassembler.feed(first[0])
    with pytest.raises(FramingError, match="interleaved"):
        reassembler.feed(second[0])


def test_out_of_order_chunks_are_rejected() -> None:
    chunks = Chunker(32).encode(Frame(FrameKind.SYNC, DOC, b"a" * 80))
    reassembler = Reassembler()
    reassembler.feed(chunks[0])
    with pytest.raises(FramingError, match="expected 1"):
        reassembler.feed(chunks[2])


def test_a_message_must_start_at_chunk_zero() -> None:
    with pytest.raises(FramingError, match="starts at chunk 1"):
        Reassembler().feed(chunk(1, 0, 1, 2, b"x"))


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", FramingError),
        (chunk(1, 0, 0, 1, b""), FramingError),
        (chunk(9, 0, 0, 1, b"\x01\x04"), UnsupportedVersion),
        (chunk(1, 0, 3, 3, b"x"), FramingError),
        (chunk(1, 0, 0, 0, b"x"), FramingError),
        (chunk(1, 0, 0, 2**32 - 1, b"x"), MessageTooLarge),
    ],
)
def test_bad_chunks_are_rejected(data: bytes, error: type[FramingError]) -> None:
    with pytest.raises(error):
        Reassembler(max_message_bytes=1000).feed(data)


def test_oversized_total_is_rejected_before_buffering_it_all() -> None:
    reassembler = Reassembler(max_message_bytes=100)
    reassembler.feed(chunk(1, 7, 0, 3, b"x" * 60))
    with pytest.raises(MessageTooLarge):
        reassembler.feed(chunk(1, 7, 1, 3, b"x" * 60))


def test_endless_chunk_stream_is_cut_off() -> None:
    """A peer announcing many tiny chunks cannot make us buffer more than the limit."""
    reassembler = Reassembler(max_message_bytes=50)
    with pytest.raises(MessageTooLarge):
        for index in range(50):
            reassembler.feed(chunk(1, 1, index, 50, b"xx"))


def test_reassembler_recovers_after_an_error() -> None:
    reassembler = Reassembler()
    reassembler.feed(chunk(1, 3, 0, 2, b"\x01"))
    with pytest.raises(FramingError):
        reassembler.feed(chunk(1, 4, 0, 1, b"\x01\x04"))
    assert reassembler.feed(chunk(1, 5, 0, 1, b"\x01\x04ok")) == error_frame("ok")


def test_garbage_frame_inside_valid_chunks_is_rejected() -> None:
    with pytest.raises(UnknownFrameKind):
        Reassembler().feed(Chunker().split(b"\x01\xee")[0])


@given(st.lists(st.binary(max_size=40), max_size=20))
def test_random_chunks_only_raise_framing_errors(chunks: list[bytes]) -> None:
    reassembler = Reassembler(max_message_bytes=200)
    for data in chunks:
        with contextlib.suppress(FramingError):
            reassembler.feed(data)


@given(
    st.binary(min_size=1, max_size=3000),
    st.integers(min_value=CHUNK_HEADER_SIZE + 1, max_value=500),
)
def test_any_payload_round_trips_at_any_chunk_size(payload: bytes, max_chunk: int) -> None:
    frame = Frame(FrameKind.SYNC, DOC, payload)
    chunks = Chunker(max_chunk).encode(frame)
    assert all(len(c) <= max_chunk for c in chunks)
    assert feed_all(Reassembler(), chunks) == [frame]
