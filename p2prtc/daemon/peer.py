"""One WebRTC connection to another daemon, carrying every share the two have in common.

The connection is authenticated for the share whose member handshake set it up (the SDPs
travelled sealed under that handshake's keys). Every further share is added by a member
handshake over the data channel itself (AUTH frames), bound to the DTLS fingerprints of this
very connection, so a membership proof cannot be replayed onto another connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pycrdt import Doc

from p2prtc.adapters.webrtc import PeerLink
from p2prtc.core.framing import PING_FRAME, Frame, FrameKind, error_frame
from p2prtc.core.handshake import (
    Authenticated,
    Failed,
    HandshakeEvent,
    Lookup,
    MemberInitiator,
    MemberResponder,
    SendMessage,
)
from p2prtc.core.ratelimit import TokenBucket
from p2prtc.core.sync import ControlFrame, PeerSync, SyncEvent

logger = logging.getLogger(__name__)

AUTH_SESSION_ID_SIZE = 16
_MAX_AUTH_SESSIONS = 64
_FLUSH_BEFORE_CLOSE_S = 1.0
# Each side pings this often; a connection that heard nothing for SILENCE_LIMIT_S is dead (a
# frozen or vanished peer, whose link ICE consent checks notice late or, seen here, not at
# all) and is closed, so that it is dialled again.
KEEPALIVE_INTERVAL_S = 5.0
SILENCE_LIMIT_S = 20.0

# (connection, events) -> None: the daemon's handler for what the peer's messages caused.
EventHandler = Callable[["PeerConnection", Sequence[SyncEvent]], Awaitable[None]]
# (connection, share id) -> None: a share was authenticated over this connection.
ShareHandler = Callable[["PeerConnection", bytes], Awaitable[None]]
# (connection, share id, payload) -> None: a member sent the share's rotated secret.
RekeyHandler = Callable[["PeerConnection", bytes, bytes], Awaitable[None]]
# (share id, awareness update) -> None: cursors and names from the peer's Jupyter rooms.
AwarenessHandler = Callable[[bytes, bytes], Awaitable[None]]
# Awareness frames accepted from one peer: per second on average, and at once.
AWARENESS_RATE = 20.0
AWARENESS_BURST = 40.0


class ConnectionState(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


def fingerprint_binding(link: PeerLink) -> bytes:
    """Both DTLS fingerprints in an order both ends agree on."""
    prints = sorted(["|".join(link.local_fingerprints()), "|".join(link.remote_fingerprints())])
    return "\n".join(prints).encode()


class PeerConnection:
    """A live link to ``peer_id`` plus the y-sync session and AUTH handshakes running on it."""

    def __init__(
        self,
        link: PeerLink,
        peer_identity: str,
        initiator_id: str,
        *,
        identity: str,
        lookup: Lookup,
        on_events: EventHandler,
        on_share: ShareHandler,
        on_rekey: RekeyHandler,
        max_queued_bytes: int,
        endpoint: str | None = None,
        on_awareness: AwarenessHandler | None = None,
    ) -> None:
        self.link = link
        self.peer_identity = peer_identity  # "<daemon id>/<run id>" as proven in the handshake
        self.peer_id = peer_identity.partition("/")[0]
        self.initiator_id = initiator_id
        self.endpoint = endpoint  # the discovered endpoint we dialled, None if it dialled us
        self.sync = PeerSync(self.peer_id)
        self.state = ConnectionState.OPEN
        self.declined: set[bytes] = set()  # shares the peer said it does not hold
        self._identity = identity
        self._lookup = lookup
        self._on_events = on_events
        self._on_share = on_share
        self._on_rekey = on_rekey
        self._on_awareness = on_awareness
        # Awareness (cursors, names) is dropped when it comes faster than this: never queued.
        self._awareness_in = TokenBucket(AWARENESS_RATE, AWARENESS_BURST)
        self._auth: dict[bytes, MemberInitiator | MemberResponder] = {}
        self._auth_shares: dict[bytes, bytes] = {}  # session id -> share id we asked for
        # What may wait for this peer before it is dropped (it resyncs when it comes back):
        # a slow peer costs memory up to this, never time for the others.
        self._max_queued_bytes = max_queued_bytes
        self._outbox: deque[bytes] = deque()
        self._queued_bytes = 0
        self._queued = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._sender = asyncio.create_task(self._send_loop(), name=f"send to {self.peer_id}")
        self.opened_at = self._last_heard = time.monotonic()
        self._keepalive = asyncio.create_task(
            self._keepalive_loop(), name=f"keepalive {self.peer_id}"
        )

    def _set_state(self, new: ConnectionState) -> None:
        logger.info("connection to %s: %s -> %s", self.peer_id, self.state.value, new.value)
        self.state = new

    @property
    def is_open(self) -> bool:
        return self.state is ConnectionState.OPEN

    async def send(self, messages: list[bytes]) -> None:
        """Queue data channel messages, in order, without waiting for this peer.

        A peer that already has more than its bound (P2PRTC_MAX_QUEUED_BYTES) waiting is too
        slow: it is disconnected rather than allowed to hold memory or slow anyone else down.
        One batch always fits over the bound: a peer catching up gets the doc in one sync
        reply, however big (it would otherwise be dropped at every reconnection).
        """
        if not messages or not self.is_open:
            return
        size = sum(map(len, messages))
        if self._queued_bytes > self._max_queued_bytes:
            logger.warning("disconnecting %s: it does not keep up", self.peer_id)
            await self.close()
            return
        self._outbox.extend(messages)
        self._queued_bytes += size
        self._drained.clear()
        self._queued.set()

    async def _send_loop(self) -> None:
        while True:
            await self._queued.wait()
            self._queued.clear()
            while self._outbox:
                message = self._outbox.popleft()
                self._queued_bytes -= len(message)
                try:
                    await self.link.send(message)  # waits while the channel's buffer is full
                except Exception as exc:  # any send failure means the link is gone
                    logger.info("sending to %s failed: %s", self.peer_id, exc)
                    self._sender_failed()
                    return
            self._drained.set()

    async def _keepalive_loop(self) -> None:
        while self.is_open:
            await asyncio.sleep(KEEPALIVE_INTERVAL_S)
            silent = time.monotonic() - self._last_heard
            if silent > SILENCE_LIMIT_S:
                logger.warning("disconnecting %s: silent for %.0f s", self.peer_id, silent)
                await self.close()
                return
            if not self._outbox:  # otherwise what is queued tells the peer we are here
                await self.send(self.sync.send_frame(PING_FRAME))

    def _sender_failed(self) -> None:
        self._outbox.clear()
        self._queued_bytes = 0
        self._drained.set()
        asyncio.get_running_loop().create_task(self.close())

    async def add_doc(self, doc_id: bytes, doc: Doc[Any]) -> None:
        if doc_id not in self.sync.doc_ids:
            await self.send(self.sync.add_doc(doc_id, doc))

    async def remove_doc(self, doc_id: bytes) -> None:
        await self.send(self.sync.remove_doc(doc_id))

    async def send_rekey(self, share_id: bytes, payload: bytes) -> None:
        """Hand the share's new secret to this (authenticated, DTLS-protected) member."""
        if share_id in self.sync.doc_ids:
            await self.send(self.sync.send_frame(Frame(FrameKind.REKEY, share_id, payload)))

    async def send_awareness(self, share_id: bytes, payload: bytes) -> None:
        """Cursors and names of the share's Jupyter rooms here, for the peer's rooms."""
        if share_id in self.sync.doc_ids:
            await self.send(self.sync.send_frame(Frame(FrameKind.AWARENESS, share_id, payload)))

    def is_authenticating(self, share_id: bytes) -> bool:
        return share_id in self._auth_shares.values()

    async def authenticate_share(self, share_id: bytes, secret: bytes) -> None:
        """Prove membership of one more share over this connection (AUTH frames)."""
        if self.is_authenticating(share_id) or share_id in self.sync.doc_ids:
            return
        session = secrets.token_bytes(AUTH_SESSION_ID_SIZE)
        machine = MemberInitiator(share_id, secret, self._identity, fingerprint_binding(self.link))
        self._auth[session] = machine
        self._auth_shares[session] = share_id
        await self._send_auth(session, machine.start())

    async def _send_auth(self, session: bytes, messages: list[bytes]) -> None:
        frames: list[bytes] = []
        for message in messages:
            frames += self.sync.send_frame(Frame(FrameKind.AUTH, session, message))
        await self.send(frames)

    async def run(self) -> None:
        """Read messages until the link closes."""
        try:
            async for message in self.link:
                self._last_heard = time.monotonic()
                events = self.sync.receive(message)
                control = [event for event in events if isinstance(event, ControlFrame)]
                others = [event for event in events if not isinstance(event, ControlFrame)]
                for event in control:
                    await self._on_control(event.frame)
                if others:
                    await self._on_events(self, others)
                if not self.is_open:
                    break
        finally:
            if self.is_open:  # the link ended by itself: say why (peer gone, limits broken...)
                logger.info("connection to %s lost: %s", self.peer_id, self.link.close_reason)
            await self.close()

    async def _on_control(self, frame: Frame) -> None:
        if frame.kind is FrameKind.REKEY and frame.doc_id in self.sync.doc_ids:
            await self._on_rekey(self, frame.doc_id, frame.payload)
            return
        if frame.kind is FrameKind.AWARENESS:
            shared = frame.doc_id in self.sync.doc_ids
            if shared and self._on_awareness and self._awareness_in.allow(time.monotonic()):
                await self._on_awareness(frame.doc_id, frame.payload)
            return
        if frame.kind is not FrameKind.AUTH:
            await self.fail(f"unexpected {frame.kind.name} frame")
            return
        session = frame.doc_id
        machine = self._auth.get(session)
        if machine is None:
            if len(self._auth) >= _MAX_AUTH_SESSIONS:
                await self.fail("too many AUTH sessions")
                return
            machine = MemberResponder(self._lookup, self._identity, fingerprint_binding(self.link))
            self._auth[session] = machine
            machine.start()
        await self._on_auth_events(session, machine.receive(frame.payload))

    async def _on_auth_events(self, session: bytes, events: list[HandshakeEvent]) -> None:
        for event in events:
            if isinstance(event, SendMessage):
                await self._send_auth(session, [event.data])
            elif isinstance(event, Authenticated):
                self._end_auth(session)
                if event.peer_daemon_id != self.peer_identity:
                    await self.fail("AUTH from a different daemon than the connection's")
                    return
                await self._on_share(self, event.share_id)
            elif isinstance(event, Failed):
                share_id = self._end_auth(session)
                if share_id is not None:
                    self.declined.add(share_id)
                logger.info("share auth with %s failed: %s", self.peer_id, event.error)

    def _end_auth(self, session: bytes) -> bytes | None:
        self._auth.pop(session, None)
        return self._auth_shares.pop(session, None)

    async def fail(self, reason: str) -> None:
        """Tell the peer why, then disconnect (a protocol violation, a hostile peer)."""
        logger.warning("disconnecting %s: %s", self.peer_id, reason)
        await self.send(self.sync.send_frame(error_frame(reason)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), _FLUSH_BEFORE_CLOSE_S)
        await self.close()

    async def close(self) -> None:
        if not self.is_open:
            return
        self._set_state(ConnectionState.CLOSED)
        for task in (self._sender, self._keepalive):
            if task is not asyncio.current_task():
                task.cancel()
        self._outbox.clear()
        self._queued_bytes = 0
        await self.link.close()

    def status(self) -> dict[str, Any]:
        address = self.link.remote_address()
        return {
            "id": self.peer_id,
            "address": f"{address[0]}:{address[1]}" if address else None,
            "connected": self.is_open,
            "path_type": self.link.path_type(),
            "queued_bytes": self._queued_bytes,
        }
