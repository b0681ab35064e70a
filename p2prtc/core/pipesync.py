"""The first y-sync round of a share over the rendezvous pipe (sans-IO).

aiortc's data channel is pure Python (SCTP and DTLS): it carries about 16 MB/s at full CPU,
so a joiner of a 50 MB notebook waited seconds for its state. The rendezvous pipe that the
member handshake ran on is a TCP connection on the LAN, sealed under the handshake's keys,
and carries hundreds of MB/s. So when both daemons name the feature ``pipesync`` in their
handshake identity, and the pipe goes straight to the other daemon (not through a
signaling relay), each side's first round of y-sync for the share that the handshake
proved runs over the pipe, before the SDP offer and answer; the data channel carries
everything after (its own SyncStep1 and SyncStep2 then find almost nothing missing).

Each side sends one frame first, then at most one more; every pipe message is one chunk of
a frame (``framing.Chunker``), sealed with the handshake's channel::

    SYNC(SyncStep1) or LEAVE     both sides at once
    SYNC(SyncStep2)              each side, once the other's SyncStep1 came, if both sent one

A side sends LEAVE (empty) instead of its SyncStep1 when it does not sync the share with
this peer (a removed member, a secret rotated away, a share being closed): then no state
flows either way, and the data channel's exchange tells the peer why, as without the
feature. The received SyncStep2 (``received``) is merged by the daemon as a link's first
SyncStep2 is (``sync.apply_sync_message``; persisted, relayed, written).

The peer is hostile input: a state is bounded by ``max_state_bytes`` (the data channel's
frame bound, 64 MiB by default) as its chunks arrive, a SyncStep1 by ``MAX_STEP1_BYTES``;
anything else than the frames above raises ``PipeSyncError``.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterator
from typing import Any

from pycrdt import Doc, YSyncMessageType, create_sync_message

from p2prtc.core.framing import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Chunker,
    Frame,
    FrameKind,
    FramingError,
    Progress,
    Reassembler,
    encode_frame,
)
from p2prtc.core.keys import SealedChannel
from p2prtc.core.sync import answer_step1, sync_message_type
from p2prtc.errors import P2PError

logger = logging.getLogger(__name__)

PIPE_SYNC_FEATURE = "pipesync"
# A state vector: about a dozen bytes per client that ever edited the doc.
MAX_STEP1_BYTES = 1024 * 1024


class PipeSyncError(P2PError):
    """The other daemon broke the first sync over the rendezvous connection."""


class PipeSyncState(enum.Enum):
    AWAITING_FIRST = "awaiting-first"  # the peer's SyncStep1 or LEAVE
    AWAITING_STATE = "awaiting-state"  # the peer's SyncStep2
    DONE = "done"
    FAILED = "failed"


class PipeSync:
    """One side of the first y-sync round for ``doc_id`` over a sealed pipe.

    ``doc`` is the share's doc, or None when we do not sync the share with this peer.
    ``start()`` gives the first messages to send; ``receive()`` takes each message the peer
    sends and gives what to send next, in order (our state, once the peer asked for it).
    Send and receive at once: both states may be large, and neither side reads only.
    """

    def __init__(
        self,
        doc_id: bytes,
        doc: Doc[Any] | None,
        channel: SealedChannel,
        *,
        max_chunk: int,
        max_state_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.doc_id = doc_id
        self._doc = doc
        self._channel = channel
        self._chunker = Chunker(max_chunk)
        self._max_state_bytes = max_state_bytes
        self._reassembler = Reassembler(MAX_STEP1_BYTES)
        self.state = PipeSyncState.AWAITING_FIRST
        self.received: bytes | None = None
        """The peer's SyncStep2 (a whole y-sync message), once in; None if none came."""

    def _set_state(self, new: PipeSyncState) -> None:
        logger.debug("pipe sync of %s: %s -> %s", self.doc_id.hex(), self.state.value, new.value)
        self.state = new

    @property
    def done(self) -> bool:
        """Whether everything the peer will send has come."""
        return self.state is PipeSyncState.DONE

    @property
    def progress(self) -> Progress | None:
        """How far the peer's state has come in (a join shows it), None between frames."""
        return self._reassembler.progress

    def start(self) -> Iterator[bytes]:
        """Our first frame: SyncStep1, or LEAVE if we do not sync the share with this peer."""
        if self._doc is None:
            return self._sealed(Frame(FrameKind.LEAVE, self.doc_id, b""))
        return self._sealed(Frame(FrameKind.SYNC, self.doc_id, create_sync_message(self._doc)))

    def receive(self, message: bytes) -> Iterator[bytes]:
        """Take the peer's next sealed message; the messages to send now (our SyncStep2 in
        answer to its SyncStep1, else none). Raises a P2PError (``PipeSyncError``, or the
        channel's error for a message not sealed by the peer) on anything unexpected, and
        after a failure or once done."""
        if self.state in (PipeSyncState.DONE, PipeSyncState.FAILED):
            self._set_state(PipeSyncState.FAILED)
            raise PipeSyncError("a message after the first sync round")
        try:
            frame = self._reassembler.feed(self._channel.open(message))
            return iter(()) if frame is None else self._on_frame(frame)
        except FramingError as exc:
            self._set_state(PipeSyncState.FAILED)
            raise PipeSyncError(exc.message) from None
        except P2PError:
            self._set_state(PipeSyncState.FAILED)
            raise

    def _on_frame(self, frame: Frame) -> Iterator[bytes]:
        if frame.doc_id != self.doc_id or frame.kind not in (FrameKind.SYNC, FrameKind.LEAVE):
            raise PipeSyncError(f"unexpected {frame.kind.name} frame")
        if self.state is PipeSyncState.AWAITING_FIRST:
            return self._on_first(frame)
        self._check(frame, YSyncMessageType.SYNC_STEP2)
        self.received = frame.payload
        self._set_state(PipeSyncState.DONE)
        return iter(())

    def _on_first(self, frame: Frame) -> Iterator[bytes]:
        if frame.kind is FrameKind.LEAVE or self._doc is None:
            if frame.kind is FrameKind.SYNC:  # asked, but we do not sync with it: we said so
                self._check(frame, YSyncMessageType.SYNC_STEP1)
            self._set_state(PipeSyncState.DONE)
            return iter(())
        self._check(frame, YSyncMessageType.SYNC_STEP1)
        try:
            step2 = answer_step1(frame.payload, self._doc)
        except ValueError as exc:
            raise PipeSyncError(f"bad SyncStep1: {exc}") from None
        self._reassembler = Reassembler(self._max_state_bytes)
        self._set_state(PipeSyncState.AWAITING_STATE)
        return self._sealed(Frame(FrameKind.SYNC, self.doc_id, step2))

    @staticmethod
    def _check(frame: Frame, expected: YSyncMessageType) -> None:
        if frame.kind is not FrameKind.SYNC:
            raise PipeSyncError(f"expected a {expected.name}, got a {frame.kind.name} frame")
        try:
            kind = sync_message_type(frame.payload)
        except ValueError as exc:
            raise PipeSyncError(str(exc)) from None
        if kind is not expected:
            raise PipeSyncError(f"expected a {expected.name}, got a {kind.name}")

    def _sealed(self, frame: Frame) -> Iterator[bytes]:
        """The frame's chunks, each sealed as it is taken (in order: the seal counts)."""
        return (self._channel.seal(chunk) for chunk in self._chunker.chunks(encode_frame(frame)))
