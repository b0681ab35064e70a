"""What the peer sends over a WebRTC link: SCTP reassembly bounded against a hostile peer,
and the inbox of messages not yet read.

Part of the aiortc adapter: `PeerLink` (adapters/webrtc.py) bounds its SCTP transport with
`bound_inbound_messages` and reads its data channel's messages through an `Inbox`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterator

from aiortc.rtcsctptransport import (
    SCTP_DATA_UNORDERED,
    DataChunk,
    InboundStream,
    RTCSctpTransport,
)

from p2prtc.adapters.webrtc_errors import LinkClosed

logger = logging.getLogger(__name__)

# aiortc advertises (and accepts) messages up to 256 KiB.
MAX_MESSAGE_SIZE = 256 * 1024
# What one SCTP stream may hold in reassembly (see _BoundedInboundStream).
MAX_REASSEMBLY_BYTES = 64 * MAX_MESSAGE_SIZE
_SSN_MODULO = 2**16


class Inbox:
    """The messages one link received and nobody read yet; reading ends once the link ends.

    Read with `await recv()` or `async for data in inbox` (which stops at the end)."""

    def __init__(self, link_id: int) -> None:
        self._link_id = link_id  # names the link in log lines
        self._messages: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._end_reason = ""

    def put(self, message: bytes | str) -> None:
        """One message from the data channel; text is dropped (the channel carries bytes)."""
        if isinstance(message, str):
            logger.warning("link %d: text message dropped (binary expected)", self._link_id)
            return
        self._messages.put_nowait(message)

    def end(self, reason: str) -> None:
        """The link closed for `reason`: what is queued can still be read, then recv() raises."""
        self._end_reason = reason
        self._messages.put_nowait(None)

    async def recv(self) -> bytes:
        """The next message; raises LinkClosed once the link is closed and drained."""
        message = await self._messages.get()
        if message is None:
            self._messages.put_nowait(None)  # so every later recv() ends too
            raise LinkClosed(self._end_reason)
        return message

    def __aiter__(self) -> Inbox:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except LinkClosed:
            raise StopAsyncIteration from None


class _BoundedInboundStream(InboundStream):
    """aiortc's reassembly of one SCTP stream, with limits a hostile peer cannot pass.

    aiortc reassembles a message of any size, rescanning every buffered fragment as each
    arrives, and buffers anything sent past a gap: a peer ignoring our advertised limits
    could make us buffer without end and stall the event loop. Here one message may not
    exceed MAX_MESSAGE_SIZE, nor the stream buffer MAX_REASSEMBLY_BYTES (far above what an
    honest sender's congestion window puts in flight); past either, fragments are dropped
    and ``on_overflow(reason)`` closes the link. The channel is ordered: unordered data is refused.
    """

    def __init__(self, on_overflow: Callable[[str], None]) -> None:
        super().__init__()
        self._on_overflow = on_overflow
        self._overflowed = False
        self._buffered = 0
        self._message_sizes: Counter[int] = Counter()  # by stream sequence number

    def add_chunk(self, chunk: DataChunk) -> None:
        if self._overflowed:
            return
        size = len(chunk.user_data)
        self._buffered += size
        self._message_sizes[chunk.stream_seq] += size
        problem = self._problem(chunk)
        if problem is None:
            super().add_chunk(chunk)
            return
        self._overflowed = True
        self.reassembly.clear()
        self._on_overflow(problem)

    def _problem(self, chunk: DataChunk) -> str | None:
        if chunk.flags & SCTP_DATA_UNORDERED:
            return "the peer sent unordered data on an ordered channel"
        if self._message_sizes[chunk.stream_seq] > MAX_MESSAGE_SIZE:
            return f"the peer sent a message over {MAX_MESSAGE_SIZE} bytes"
        if self._buffered > MAX_REASSEMBLY_BYTES:
            return f"the peer left over {MAX_REASSEMBLY_BYTES} bytes unfinished"
        return None

    def pop_messages(self) -> Iterator[tuple[int, int, bytes]]:
        for message in super().pop_messages():
            # aiortc advanced sequence_number past the message just completed.
            self._message_sizes.pop((self.sequence_number - 1) % _SSN_MODULO, None)
            self._buffered -= len(message[2])
            yield message

    def prune_chunks(self, tsn: int) -> int:
        freed = super().prune_chunks(tsn)
        self._buffered -= freed
        return freed


def bound_inbound_messages(sctp: RTCSctpTransport, on_overflow: Callable[[str], None]) -> None:
    """Make ``sctp`` reassemble through _BoundedInboundStream (aiortc has no option for it)."""
    streams: dict[int, InboundStream] = sctp._inbound_streams

    def get_inbound_stream(stream_id: int) -> InboundStream:
        if stream_id not in streams:
            streams[stream_id] = _BoundedInboundStream(on_overflow)
        return streams[stream_id]

    sctp._get_inbound_stream = get_inbound_stream  # type: ignore[method-assign]
