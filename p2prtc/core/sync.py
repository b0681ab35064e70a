"""y-sync with one peer over many documents (sans-IO).

A ``PeerSync`` owns one data channel's worth of protocol: it chunks outgoing frames,
reassembles incoming ones, and runs y-sync (SyncStep1/SyncStep2 anti-entropy, then updates)
for every document registered with that peer, multiplexed by 16-byte doc id. It applies the
peer's updates to the documents itself and reports those that changed something as
``RemoteUpdate`` events, which the daemon persists, renders and relays to its other peers.
Updates that change nothing produce no event, which is what stops gossip from looping.

An update that arrives before one it builds on (gossip takes several paths) is not fully
applied: pycrdt can even lose it (see tests/test_convergence.py). The doc then lacks part of
what the update covers, so the session asks this peer at once for what it misses (a fresh
SyncStep1; its SyncStep2 repairs the doc), one request per round trip.

Nothing the peer sends can make it raise: garbage becomes a ``ProtocolViolation`` event and
the daemon disconnects that peer.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pycrdt import (
    Doc,
    TransactionEvent,
    YMessageType,
    YSyncMessageType,
    create_sync_message,
    create_update_message,
    get_update,
    handle_sync_message,
)

from p2prtc.core.framing import (
    DEFAULT_MAX_CHUNK,
    DEFAULT_MAX_MESSAGE_BYTES,
    DOC_ID_SIZE,
    Chunker,
    Frame,
    FrameKind,
    FramingError,
    Progress,
    Reassembler,
    error_reason,
)

logger = logging.getLogger(__name__)

_EMPTY_UPDATE = b"\x00\x00"
# 9 varint bytes hold 63 bits: more than any length a message can have.
_MAX_VARINT_BYTES = 9


@dataclass(frozen=True)
class Send:
    """Data channel messages to send to this peer, in order."""

    messages: list[bytes]


@dataclass(frozen=True)
class RemoteUpdate:
    """The peer's update changed the document (already applied): persist, render, relay it."""

    doc_id: bytes
    update: bytes


@dataclass(frozen=True)
class Synced:
    """The first SyncStep2 from the peer was applied: we have all it had when we asked."""

    doc_id: bytes


class LeaveReason(enum.Enum):
    """Why a peer stopped syncing a document with us: the LEAVE frame's payload.

    Daemons that predate reasons send an empty payload; a reason this version does not know
    reads as unspecified too, so a newer one can add reasons.
    """

    UNSPECIFIED = ""
    LEFT = "left"  # its user stopped syncing the file there (p2prtc leave)
    REMOVED = "removed"  # a member removed *us*: the sender holds a secret we are not given
    # We proved a secret the sender rotated away while we were offline (a removal we did not
    # hear of): only a new invitation lets us back in.
    OUTDATED = "outdated"

    @classmethod
    def decode(cls, payload: bytes) -> LeaveReason:
        try:
            return cls(payload.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return cls.UNSPECIFIED


@dataclass(frozen=True)
class PeerLeft:
    """The peer stopped syncing this document with us; it is no longer registered."""

    doc_id: bytes
    reason: LeaveReason = LeaveReason.UNSPECIFIED


@dataclass(frozen=True)
class ControlFrame:
    """A frame for the daemon rather than for y-sync (e.g. an AUTH handshake message)."""

    frame: Frame


@dataclass(frozen=True)
class PeerError:
    """The peer reported an error and is closing the connection."""

    reason: str


@dataclass(frozen=True)
class ProtocolViolation:
    """The peer sent something invalid; the daemon should log it and disconnect the peer."""

    reason: str


SyncEvent = Send | RemoteUpdate | Synced | PeerLeft | ControlFrame | PeerError | ProtocolViolation


class _Violation(Exception):
    """Internal: aborts handling of one frame; becomes a ProtocolViolation event."""


class DocSyncState(enum.Enum):
    AWAITING_STEP2 = "awaiting-step2"
    SYNCED = "synced"


@dataclass
class _DocLink:
    """One document as synced with this peer."""

    doc_id: bytes
    doc: Doc[Any]
    state: DocSyncState = field(default=DocSyncState.AWAITING_STEP2)
    repairing: bool = False  # a SyncStep1 asked for what an out-of-order update lacked

    def _set_state(self, new: DocSyncState) -> None:
        logger.debug("doc %s: %s -> %s", self.doc_id.hex(), self.state.value, new.value)
        self.state = new


class PeerSync:
    """y-sync with the peer ``peer_id`` over every document registered with it."""

    def __init__(
        self,
        peer_id: str,
        max_chunk: int = DEFAULT_MAX_CHUNK,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.peer_id = peer_id
        self._chunker = Chunker(max_chunk)
        self._reassembler = Reassembler(max_message_bytes)
        self._links: dict[bytes, _DocLink] = {}
        # Docs we stopped syncing: the peer may still have messages for them in flight.
        self._retired: set[bytes] = set()

    @property
    def doc_ids(self) -> frozenset[bytes]:
        """The documents currently synced with this peer."""
        return frozenset(self._links)

    def add_doc(self, doc_id: bytes, doc: Doc[Any]) -> list[bytes]:
        """Start syncing ``doc`` with the peer; returns the messages carrying our SyncStep1."""
        if len(doc_id) != DOC_ID_SIZE:
            raise ValueError(f"doc ids are {DOC_ID_SIZE} bytes")
        if doc_id in self._links:
            raise ValueError(f"doc {doc_id.hex()} is already synced with {self.peer_id}")
        self._links[doc_id] = _DocLink(doc_id, doc)
        self._retired.discard(doc_id)
        return self._sync_frame(doc_id, create_sync_message(doc))

    def remove_doc(
        self, doc_id: bytes, reason: LeaveReason = LeaveReason.UNSPECIFIED
    ) -> list[bytes]:
        """Stop syncing a document; returns the LEAVE message that tells the peer so (and
        why: daemons that predate reasons ignore the payload)."""
        return self.refuse_doc(doc_id, reason) if doc_id in self._links else []

    def refuse_doc(self, doc_id: bytes, reason: LeaveReason) -> list[bytes]:
        """Stop (or never start) syncing a document the peer holds; returns the LEAVE
        message that tells it why."""
        self._links.pop(doc_id, None)
        self._retired.add(doc_id)
        return self._chunker.encode(Frame(FrameKind.LEAVE, doc_id, reason.value.encode()))

    def resync(self, doc_id: bytes) -> list[bytes]:
        """A fresh SyncStep1 (anti-entropy): the peer answers with whatever we still miss.

        Sent now and then on live connections, it repairs updates lost or mis-ordered on a
        gossip path (pycrdt can drop an update that arrives before its dependencies).
        """
        link = self._links.get(doc_id)
        return [] if link is None else self._sync_frame(doc_id, create_sync_message(link.doc))

    def is_synced(self, doc_id: bytes) -> bool:
        """Whether the peer's SyncStep2 for this document has been applied."""
        link = self._links.get(doc_id)
        return link is not None and link.state is DocSyncState.SYNCED

    def local_update(self, doc_id: bytes, update: bytes) -> list[bytes]:
        """Messages carrying an update made locally or relayed from another peer."""
        if doc_id not in self._links or update == _EMPTY_UPDATE:
            return []
        return self._sync_frame(doc_id, create_update_message(update))

    def send_frame(self, frame: Frame) -> list[bytes]:
        """Chunk any other frame (AUTH, ERROR) for this peer's channel."""
        return self._chunker.encode(frame)

    def receiving(self, doc_id: bytes) -> Progress | None:
        """How far a frame about ``doc_id`` (a first sync's state, say) has come in."""
        progress = self._reassembler.progress
        return progress if progress is not None and progress.doc_id == doc_id else None

    def receive(self, message: bytes) -> list[SyncEvent]:
        """Handle one data channel message from the peer. Never raises."""
        try:
            frame = self._reassembler.feed(message)
            return [] if frame is None else self._dispatch(frame)
        except (FramingError, _Violation) as exc:
            logger.info("peer %s violated the protocol: %s", self.peer_id, exc)
            return [ProtocolViolation(str(exc))]

    def _dispatch(self, frame: Frame) -> list[SyncEvent]:
        if frame.kind is FrameKind.SYNC:
            return self._on_sync(frame.doc_id, frame.payload)
        if frame.kind is FrameKind.LEAVE:
            return self._on_leave(frame.doc_id, LeaveReason.decode(frame.payload))
        if frame.kind is FrameKind.ERROR:
            return [PeerError(error_reason(frame))]
        if frame.kind is FrameKind.PING:
            return []  # its arrival is all it says (the connection notes every message)
        return [ControlFrame(frame)]

    def _on_leave(self, doc_id: bytes, reason: LeaveReason) -> list[SyncEvent]:
        if self._links.pop(doc_id, None) is None:
            return []
        self._retired.add(doc_id)
        return [PeerLeft(doc_id, reason)]

    def _on_sync(self, doc_id: bytes, payload: bytes) -> list[SyncEvent]:
        link = self._links.get(doc_id)
        if link is None:
            if doc_id in self._retired:
                logger.debug("dropping sync message for retired doc %s", doc_id.hex())
                return []
            raise _Violation(f"sync message for unknown doc {doc_id.hex()}")
        message_type = _check_sync_message(payload)
        if message_type is YSyncMessageType.SYNC_STEP1:
            return self._on_step1(link, payload)
        events = self._apply(link, payload)
        if message_type is YSyncMessageType.SYNC_STEP2:
            link.repairing = False
            if link.state is not DocSyncState.SYNCED:
                link._set_state(DocSyncState.SYNCED)
                events.append(Synced(doc_id))
        # Updates only: a SyncStep2 may carry what the peer itself holds pending, and asking
        # again would not make it any more complete.
        ahead = message_type is YSyncMessageType.SYNC_UPDATE and not link.repairing
        if ahead and not _covers(link.doc, _update_of(payload)):
            logger.info("doc %s: an update came before what it builds on", doc_id.hex())
            link.repairing = True
            events.append(Send(self._sync_frame(doc_id, create_sync_message(link.doc))))
        return events

    def _on_step1(self, link: _DocLink, payload: bytes) -> list[SyncEvent]:
        try:
            reply = answer_step1(payload, link.doc)
        except ValueError as exc:
            raise _Violation(f"bad SyncStep1 for doc {link.doc_id.hex()}: {exc}") from None
        return [Send(self._sync_frame(link.doc_id, reply))]

    def _apply(self, link: _DocLink, payload: bytes) -> list[SyncEvent]:
        """Apply a SyncStep2 or update; report what it changed (nothing: no event)."""
        try:
            changes = apply_sync_message(payload, link.doc)
        except ValueError as exc:
            raise _Violation(f"bad update for doc {link.doc_id.hex()}: {exc}") from None
        return [RemoteUpdate(link.doc_id, update) for update in changes]

    def _sync_frame(self, doc_id: bytes, y_message: bytes) -> list[bytes]:
        return self._chunker.encode(Frame(FrameKind.SYNC, doc_id, y_message))


@contextmanager
def _captured_updates(doc: Doc[Any]) -> Iterator[list[bytes]]:
    """Collect the updates that transactions commit to ``doc`` meanwhile.

    yrs only emits an update event when a transaction changed the document, and the update it
    emits is exactly the change: an update we already had yields nothing, and one that was
    waiting for a missing dependency is emitted together with it once that arrives.
    """
    updates: list[bytes] = []

    def collect(event: TransactionEvent) -> None:
        updates.append(event.update)

    subscription = doc.observe(collect)
    try:
        yield updates
    finally:
        doc.unobserve(subscription)


def _update_of(payload: bytes) -> bytes:
    """The update a (checked) update message carries."""
    _, start = _read_varint(payload, 2)
    return payload[start:]


def _covers(doc: Doc[Any], update: bytes) -> bool:
    """Does the doc hold every item the update inserts? (Not when yrs left some pending.)

    The update's own state vector cannot tell: yrs counts a client only from clock 0. Its
    diff against the doc's state vector can: that diff starts with the number of clients
    whose items the doc lacks (deletions come after, and are always repeated).
    """
    try:
        missing = get_update(update, doc.get_state())
    except Exception:  # pycrdt read it already; whatever happens, input never raises
        return True
    return missing[:1] == b"\x00"


def apply_sync_message(payload: bytes, doc: Doc[Any]) -> list[bytes]:
    """Apply a (checked) SyncStep2 or update message to ``doc``: the updates it made, none
    when it changed nothing (see ``_captured_updates``). ValueError for an update pycrdt
    cannot read."""
    with _captured_updates(doc) as changes:
        try:
            handle_sync_message(payload[1:], doc)
        except Exception as exc:  # pycrdt raises ValueError on an undecodable update
            raise ValueError(str(exc)) from None
    return changes


def answer_step1(step1: bytes, doc: Doc[Any]) -> bytes:
    """The SyncStep2 answering a (checked) SyncStep1 message: what ``doc`` has that the
    sender lacks. ValueError for a state vector pycrdt cannot read."""
    try:
        reply = handle_sync_message(step1[1:], doc)
    except Exception as exc:  # pycrdt raises ValueError on a bad state vector
        raise ValueError(str(exc)) from None
    assert reply is not None  # a SyncStep1 always gets a SyncStep2
    return reply


def sync_message_type(payload: bytes) -> YSyncMessageType:
    """The type of a y-sync message, checked strictly (pycrdt's own reader tolerates
    truncation); ValueError saying what is wrong."""
    try:
        return _check_sync_message(payload)
    except _Violation as exc:
        raise ValueError(str(exc)) from None


def _check_sync_message(payload: bytes) -> YSyncMessageType:
    """Validate a y-sync message strictly (pycrdt's own reader tolerates truncation)."""
    if len(payload) < 3 or payload[0] != YMessageType.SYNC:
        raise _Violation("not a y-sync message")
    try:
        message_type = YSyncMessageType(payload[1])
    except ValueError:
        raise _Violation(f"unknown y-sync message type {payload[1]}") from None
    length, start = _read_varint(payload, 2)
    if len(payload) - start != length:
        raise _Violation(f"y-sync message announces {length} bytes, has {len(payload) - start}")
    return message_type


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    """Decode a lib0 unsigned varint at ``offset``; return (value, offset after it)."""
    value = 0
    for position, byte in enumerate(data[offset : offset + _MAX_VARINT_BYTES]):
        value |= (byte & 0x7F) << (7 * position)
        if byte < 0x80:
            return value, offset + position + 1
    raise _Violation("truncated or oversized varint")
