"""Versioned frames and their chunking into data channel messages (sans-IO).

A *frame* is one protocol message between two daemons: a y-sync message for one document, a
member handshake message, an error... It is encoded as::

    version:u8 | kind:u8 | id:16 bytes (only for per-document kinds) | payload

A data channel message has a size limit (browsers are only safe under 16 KiB), so an encoded
frame travels as one or more *chunks*::

    version:u8 | message_id:u32 | index:u32 | count:u32 | data

Chunks of one frame are sent back to back: a data channel is reliable and ordered, and the
sender hands all chunks of a frame to the channel in one go, so the receiver never has more
than one frame in progress. That keeps reassembly simple and its memory bounded by
``max_message_bytes``. A chunk that starts another frame before the current one is complete
is a protocol error, not something to buffer. See docs/protocol.md.
"""

from __future__ import annotations

import enum
import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from p2prtc.errors import P2PError

logger = logging.getLogger(__name__)

FRAME_VERSION = 1
CHUNK_VERSION = 1
DOC_ID_SIZE = 16
DEFAULT_MAX_CHUNK = 16384
# A whole-document SyncStep2 of a big notebook with image outputs is tens of MB at most.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

_CHUNK_HEADER = struct.Struct("!BIII")
CHUNK_HEADER_SIZE = _CHUNK_HEADER.size
_MAX_MESSAGE_ID = 2**32


class FramingError(P2PError):
    """The peer sent a malformed message."""


class UnsupportedVersion(FramingError):
    """The peer speaks an unsupported version of the p2prtc protocol."""


class UnknownFrameKind(FramingError):
    """The peer sent a kind of message this version of p2prtc does not know."""


class MessageTooLarge(FramingError):
    """The peer sent a message larger than allowed."""


class FrameKind(enum.IntEnum):
    """What a frame carries. Per-document kinds carry a 16-byte id before the payload."""

    SYNC = 1  # a y-sync message (pycrdt encoding) for the document ``doc_id``
    LEAVE = 2  # the sender stopped syncing ``doc_id`` with us; empty payload
    AUTH = 3  # a member handshake message; ``doc_id`` is the exchange id chosen by its initiator
    ERROR = 4  # connection-level: utf-8 reason; the sender closes the connection next
    REKEY = 5  # the share ``doc_id`` has a new secret and member list (JSON), after a removal
    PING = 6  # connection-level keepalive, empty: the sender is alive and reading
    AWARENESS = 7  # an awareness update (y-protocols encoding) of ``doc_id``'s Jupyter rooms

    @property
    def has_doc_id(self) -> bool:
        """Whether frames of this kind carry the 16-byte id slot."""
        return self not in (FrameKind.ERROR, FrameKind.PING)


@dataclass(frozen=True)
class Frame:
    """One protocol message; ``doc_id`` is 16 bytes for per-document kinds, else empty."""

    kind: FrameKind
    doc_id: bytes
    payload: bytes

    def __post_init__(self) -> None:
        expected = DOC_ID_SIZE if self.kind.has_doc_id else 0
        if len(self.doc_id) != expected:
            raise ValueError(f"{self.kind.name} frames need a {expected}-byte id")


def error_frame(reason: str) -> Frame:
    """The ERROR frame telling the peer why we are about to close the connection."""
    return Frame(FrameKind.ERROR, b"", reason.encode("utf-8"))


PING_FRAME = Frame(FrameKind.PING, b"", b"")


def error_reason(frame: Frame) -> str:
    """The reason carried by an ERROR frame, readable even if the peer sent bad utf-8."""
    return frame.payload.decode("utf-8", errors="replace")


def encode_frame(frame: Frame) -> bytes:
    """Serialize a frame (without chunking)."""
    return bytes((FRAME_VERSION, frame.kind)) + frame.doc_id + frame.payload


def decode_frame(data: bytes) -> Frame:
    """Parse an encoded frame; raises a FramingError subclass on anything unexpected."""
    if len(data) < 2:
        raise FramingError("frame shorter than its header")
    if data[0] != FRAME_VERSION:
        raise UnsupportedVersion(f"frame version {data[0]}, expected {FRAME_VERSION}")
    try:
        kind = FrameKind(data[1])
    except ValueError:
        raise UnknownFrameKind(f"frame kind {data[1]}") from None
    id_end = 2 + (DOC_ID_SIZE if kind.has_doc_id else 0)
    if len(data) < id_end:
        raise FramingError(f"{kind.name} frame too short for its id")
    return Frame(kind, data[2:id_end], data[id_end:])


class Chunker:
    """Splits encoded frames into data channel messages of at most ``max_chunk`` bytes."""

    def __init__(self, max_chunk: int = DEFAULT_MAX_CHUNK) -> None:
        if max_chunk <= CHUNK_HEADER_SIZE:
            raise ValueError(f"max_chunk must exceed the {CHUNK_HEADER_SIZE}-byte chunk header")
        self._data_per_chunk = max_chunk - CHUNK_HEADER_SIZE
        self._next_id = 0

    def encode(self, frame: Frame) -> list[bytes]:
        """Encode a frame and split it into chunks, to be sent back to back, in order."""
        return self.split(encode_frame(frame))

    def split(self, data: bytes) -> list[bytes]:
        """Split one encoded frame (non-empty) into chunks."""
        return list(self.chunks(data))

    def chunks(self, data: bytes) -> Iterator[bytes]:
        """The chunks of one encoded frame (non-empty), each made as it is taken: a big
        frame is not held twice. The frame's number is taken now, not when iterated."""
        if not data:
            raise ValueError("cannot chunk an empty message")
        message_id = self._next_id
        self._next_id = (self._next_id + 1) % _MAX_MESSAGE_ID
        size = self._data_per_chunk
        count = -(-len(data) // size)
        return (
            _CHUNK_HEADER.pack(CHUNK_VERSION, message_id, index, count)
            + data[index * size : (index + 1) * size]
            for index in range(count)
        )


@dataclass(frozen=True)
class Progress:
    """How far the frame being received has come (a join shows it as a progress bar).

    ``expected`` is an upper bound until the last chunk: every chunk but the last is as
    full as the first, so the frame holds at most ``count`` times the first chunk's data.
    """

    doc_id: bytes  # empty for a connection-level frame, or one too short to tell
    received: int
    expected: int


class Reassembler:
    """Turns the chunks received on one data channel back into frames, with bounded memory.

    ``feed`` returns the frame a chunk completes, or None while a frame is still incomplete.
    On a malformed chunk it raises a FramingError subclass and drops the partial frame; the
    caller is expected to close the connection.
    """

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self._max_message_bytes = max_message_bytes
        self._pending: _PendingMessage | None = None

    def feed(self, chunk: bytes) -> Frame | None:
        """Add the next chunk received; return the frame it completes, if any."""
        try:
            return self._feed(chunk)
        except FramingError:
            self._pending = None
            raise

    @property
    def progress(self) -> Progress | None:
        """The frame in progress, None between frames."""
        pending = self._pending
        if pending is None:
            return None
        return Progress(pending.doc_id(), pending.size, pending.count * len(pending.parts[0]))

    def _feed(self, chunk: bytes) -> Frame | None:
        message_id, index, count, data = _parse_chunk(chunk)
        if count > self._max_message_bytes:
            # Every chunk carries at least one byte, so this frame could never fit.
            raise MessageTooLarge(f"{count} chunks announced")
        pending = self._pending
        if pending is None:
            if index != 0:
                raise FramingError(f"message {message_id} starts at chunk {index}, not 0")
            pending = self._pending = _PendingMessage(message_id, count)
        elif (message_id, count) != (pending.message_id, pending.count):
            raise FramingError(
                f"message {message_id} interleaved with unfinished message {pending.message_id}"
            )
        elif index != pending.next_index:
            raise FramingError(f"chunk {index} arrived, expected {pending.next_index}")
        pending.add(data)
        if pending.size > self._max_message_bytes:
            raise MessageTooLarge(f"over {self._max_message_bytes} bytes")
        if pending.next_index < pending.count:
            return None
        self._pending = None
        return decode_frame(pending.join())


class _PendingMessage:
    """The chunks received so far of the one frame in progress."""

    def __init__(self, message_id: int, count: int) -> None:
        self.message_id = message_id
        self.count = count
        self.parts: list[bytes] = []
        self.size = 0

    @property
    def next_index(self) -> int:
        return len(self.parts)

    def add(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)

    def join(self) -> bytes:
        return b"".join(self.parts)

    def doc_id(self) -> bytes:
        """The document the frame is about, read from its header in the first chunk."""
        header = self.parts[0][: 2 + DOC_ID_SIZE]
        if len(header) < 2 + DOC_ID_SIZE or header[1] not in _KINDS_WITH_DOC_ID:
            return b""
        return header[2:]


_KINDS_WITH_DOC_ID = frozenset(kind.value for kind in FrameKind if kind.has_doc_id)


def _parse_chunk(chunk: bytes) -> tuple[int, int, int, bytes]:
    """Split a chunk into (message_id, index, count, data), checking the header."""
    if len(chunk) <= CHUNK_HEADER_SIZE:
        raise FramingError("chunk without data")
    version, message_id, index, count = _CHUNK_HEADER.unpack_from(chunk)
    if version != CHUNK_VERSION:
        raise UnsupportedVersion(f"chunk version {version}, expected {CHUNK_VERSION}")
    if not index < count:
        raise FramingError(f"chunk index {index} out of {count}")
    return message_id, index, count, chunk[CHUNK_HEADER_SIZE:]
