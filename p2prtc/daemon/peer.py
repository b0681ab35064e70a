"""One WebRTC connection to another daemon, carrying every share the two have in common.

The connection is authenticated for the share whose member handshake set it up (the SDPs
travelled sealed under that handshake's keys). Every further share is added by a member
handshake over the data channel itself (AUTH frames, share_auth.py), bound to the DTLS
fingerprints of this very connection. This module owns the link's life: the bounded
outbox, keepalive, the y-sync session; the control frames (AUTH, REKEY, AWARENESS) go to
its ``control`` (peer_control.py).
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from pycrdt import Doc

from p2prtc.core.framing import PING_FRAME, Frame, error_frame
from p2prtc.core.handshake import Lookup
from p2prtc.core.names import label, name_from_features
from p2prtc.core.sync import ControlFrame, LeaveReason, PeerSync, SyncEvent
from p2prtc.daemon.outbox import Outbox
from p2prtc.daemon.peer_control import PeerControl

if TYPE_CHECKING:  # imported when the first link is made: see links.WEBRTC
    from p2prtc.adapters.webrtc import PeerLink

logger = logging.getLogger(__name__)

_FLUSH_BEFORE_CLOSE_S = 1.0
# Each side pings this often; a connection that heard nothing for SILENCE_LIMIT_S is dead (a
# frozen or vanished peer, whose link ICE consent checks notice late or, seen here, not at
# all) and is closed, so that it is dialled again.
KEEPALIVE_INTERVAL_S = 5.0
SILENCE_LIMIT_S = 20.0

# (connection, events) -> None: the daemon's handler for what the peer's messages caused.
EventHandler = Callable[["PeerConnection", Sequence[SyncEvent]], Awaitable[None]]
# (connection, share id, secret proven) -> None: a share was authenticated over this connection.
ShareHandler = Callable[["PeerConnection", bytes, bytes], Awaitable[None]]
# (connection, share id, payload) -> None: a member sent the share's rotated secret.
RekeyHandler = Callable[["PeerConnection", bytes, bytes], Awaitable[None]]
# (connection, share id, awareness update) -> None: who is in the peer's Jupyter rooms.
AwarenessHandler = Callable[["PeerConnection", bytes, bytes], Awaitable[None]]


class ConnectionState(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


def fingerprint_binding(link: PeerLink) -> bytes:
    """Both DTLS fingerprints in an order both ends agree on."""
    path = link.path
    prints = sorted(["|".join(path.local_fingerprints()), "|".join(path.remote_fingerprints())])
    return "\n".join(prints).encode()


def features_of(identity: str) -> frozenset[str]:
    """The features a handshake identity ``<daemon id>/<run id>/<feature>...`` names."""
    return frozenset(identity.split("/")[2:])


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
        came_as_newcomer: bool = False,
    ) -> None:
        self.link = link
        # "<daemon id>/<run id>[/<feature>...]" as proven in the handshake
        self.peer_identity = peer_identity
        self.peer_id = peer_identity.partition("/")[0]
        self.peer_features = features_of(peer_identity)
        self.peer_name = name_from_features(self.peer_features)  # None: an older daemon
        # How log lines name the peer: "alice@laptop (<daemon id>)".
        self.label = label(self.peer_id, self.peer_name)
        self.initiator_id = initiator_id
        self.endpoint = endpoint  # the discovered endpoint we dialled, None if it dialled us
        # It dialled us with no link to the share (mesh.link_to_shed prefers such links).
        self.came_as_newcomer = came_as_newcomer
        self.sync = PeerSync(self.label)
        self.state = ConnectionState.OPEN
        self._on_events = on_events
        self.control = PeerControl(
            self.sync,
            peer_identity,
            self.peer_features,
            label=self.label,
            identity=identity,
            lookup=lookup,
            binding=fingerprint_binding(link),
            send_frames=self.send_frames,
            fail=self.fail,
            on_share=functools.partial(on_share, self),
            on_rekey=functools.partial(on_rekey, self),
            on_awareness=functools.partial(on_awareness, self) if on_awareness else None,
        )
        # What may wait for this peer before it is dropped (it resyncs when it comes back).
        self._outbox = Outbox(
            link.send,
            max_queued_bytes,
            peer=self.label,
            on_failure=lambda: asyncio.get_running_loop().create_task(self.close()),
        )
        self.opened_at = self._last_heard = time.monotonic()
        self._keepalive = asyncio.create_task(
            self._keepalive_loop(), name=f"keepalive {self.peer_id}"
        )

    def _set_state(self, new: ConnectionState) -> None:
        logger.info("connection to %s: %s -> %s", self.label, self.state.value, new.value)
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
        if self._outbox.over_bound:
            logger.warning("disconnecting %s: it does not keep up", self.label)
            await self.close()
            return
        self._outbox.put(messages)

    async def _keepalive_loop(self) -> None:
        while self.is_open:
            await asyncio.sleep(KEEPALIVE_INTERVAL_S)
            silent = time.monotonic() - self._last_heard
            if silent > SILENCE_LIMIT_S:
                logger.warning("disconnecting %s: silent for %.0f s", self.label, silent)
                await self.close()
                return
            if self._outbox.empty:  # otherwise what is queued tells the peer we are here
                await self.send(self.sync.send_frame(PING_FRAME))

    async def add_doc(self, doc_id: bytes, doc: Doc[Any]) -> None:
        if doc_id not in self.sync.doc_ids:
            await self.send(self.sync.add_doc(doc_id, doc))

    async def remove_doc(self, doc_id: bytes, reason: LeaveReason) -> None:
        await self.send(self.sync.remove_doc(doc_id, reason))

    async def refuse_doc(self, doc_id: bytes, reason: LeaveReason) -> None:
        await self.send(self.sync.refuse_doc(doc_id, reason))

    async def send_frames(self, frames: list[Frame]) -> None:
        messages: list[bytes] = []
        for frame in frames:
            messages += self.sync.send_frame(frame)
        await self.send(messages)

    async def run(self) -> None:
        """Read messages until the link closes."""
        try:
            async for message in self.link:
                self._last_heard = time.monotonic()
                events = self.sync.receive(message)
                control = [event for event in events if isinstance(event, ControlFrame)]
                others = [event for event in events if not isinstance(event, ControlFrame)]
                for event in control:
                    await self.control.receive(event.frame)
                if others:
                    await self._on_events(self, others)
                if not self.is_open:
                    break
        finally:
            if self.is_open:  # the link ended by itself: say why (peer gone, limits broken...)
                logger.info("connection to %s lost: %s", self.label, self.link.close_reason)
            await self.close()

    async def fail(self, reason: str) -> None:
        """Tell the peer why, then disconnect (a protocol violation, a hostile peer)."""
        logger.warning("disconnecting %s: %s", self.label, reason)
        await self.send(self.sync.send_frame(error_frame(reason)))
        await self._outbox.flush(_FLUSH_BEFORE_CLOSE_S)
        await self.close()

    async def close(self) -> None:
        if not self.is_open:
            return
        self._set_state(ConnectionState.CLOSED)
        if self._keepalive is not asyncio.current_task():
            self._keepalive.cancel()
        self._outbox.close()
        await self.link.close()

    def status(self) -> dict[str, Any]:
        address = self.link.path.remote_address()
        return {
            "id": self.peer_id,
            "name": self.peer_name,
            "address": f"{address[0]}:{address[1]}" if address else None,
            "connected": self.is_open,
            "path_type": self.link.path.path_type(),
            "queued_bytes": self._outbox.queued_bytes,
        }
