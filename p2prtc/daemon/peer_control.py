"""The control frames of one connection to another daemon, both ways: AUTH (a member
handshake for each further share, share_auth.py), REKEY (a share's rotated secret) and
AWARENESS (who is in the peer's Jupyter rooms, rate-limited); any other kind breaks the
protocol. `PeerConnection` (peer.py) hands it the control frames it reads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from p2prtc.core.framing import Frame, FrameKind
from p2prtc.core.handshake import Authenticated, Lookup
from p2prtc.core.ratelimit import TokenBucket
from p2prtc.core.sync import PeerSync
from p2prtc.daemon.share_auth import Fail, SendFrame, ShareAuth

logger = logging.getLogger(__name__)

# Awareness frames accepted from one peer: per second on average, and at once.
AWARENESS_RATE = 20.0
AWARENESS_BURST = 40.0

# (share id, payload) -> None: what the daemon does with a share's frame from this peer
# (the secret proven by AUTH, a REKEY's payload, an AWARENESS update).
ShareFrameHandler = Callable[[bytes, bytes], Awaitable[None]]


class PeerControl:
    """The control frames exchanged with one peer.

    ``sync``: the connection's y-sync session (which shares the two hold in common);
    ``peer_identity``: the peer as its connection's handshake proved it; ``identity``,
    ``lookup``, ``binding``: our side of the AUTH handshakes (see ShareAuth); ``on_share``,
    ``on_rekey``, ``on_awareness``: the daemon's handlers; ``send_frames`` queues frames to
    the peer, ``fail`` disconnects it saying why.
    """

    def __init__(
        self,
        sync: PeerSync,
        peer_identity: str,
        peer_features: frozenset[str],
        *,
        label: str,
        identity: str,
        lookup: Lookup,
        binding: bytes,
        send_frames: SendFrame,
        fail: Fail,
        on_share: ShareFrameHandler,
        on_rekey: ShareFrameHandler,
        on_awareness: ShareFrameHandler | None,
    ) -> None:
        self._sync = sync
        self._peer_identity = peer_identity
        self._peer_features = peer_features
        self._label = label
        self._send_frames = send_frames
        self._fail = fail
        self._on_share = on_share
        self._on_rekey = on_rekey
        self._on_awareness = on_awareness
        # Awareness (cursors, names) is dropped when it comes faster than this: never queued.
        self._awareness_in = TokenBucket(AWARENESS_RATE, AWARENESS_BURST)
        self._auth = ShareAuth(
            identity,
            lookup,
            binding,
            send=send_frames,
            on_authenticated=self._on_authenticated,
            fail=fail,
        )

    async def authenticate_share(self, share_id: bytes, secret: bytes) -> None:
        """Prove membership of one more share over this connection (AUTH frames), unless
        the two hold it in common already or the peer said it does not hold it."""
        if share_id not in self._sync.doc_ids and share_id not in self._auth.declined:
            await self._auth.start(share_id, secret)

    async def send_rekey(self, share_id: bytes, payload: bytes) -> None:
        """Hand the share's new secret to this (authenticated, DTLS-protected) member."""
        if share_id in self._sync.doc_ids:
            await self._send_frames([Frame(FrameKind.REKEY, share_id, payload)])

    async def send_awareness(self, share_id: bytes, payload: bytes) -> None:
        """Cursors and names of the share's Jupyter rooms here, for the peer's rooms."""
        if share_id in self._sync.doc_ids and "awareness" in self._peer_features:
            await self._send_frames([Frame(FrameKind.AWARENESS, share_id, payload)])

    async def receive(self, frame: Frame) -> None:
        """A control frame the peer sent."""
        if frame.kind is FrameKind.AWARENESS:
            shared = frame.doc_id in self._sync.doc_ids
            if shared and self._on_awareness and self._awareness_in.allow(time.monotonic()):
                await self._on_awareness(frame.doc_id, frame.payload)
            return
        if frame.kind is FrameKind.REKEY:
            if frame.doc_id in self._sync.doc_ids:
                await self._on_rekey(frame.doc_id, frame.payload)
            else:  # one that crossed our LEAVE (or theirs) on the wire
                logger.debug("ignoring a REKEY for a document %s left", self._label)
            return
        if frame.kind is not FrameKind.AUTH:
            await self._fail(f"unexpected {frame.kind.name} frame")
            return
        await self._auth.receive(frame)

    async def _on_authenticated(self, event: Authenticated) -> None:
        if event.peer_daemon_id != self._peer_identity:
            await self._fail("AUTH from a different daemon than the connection's")
            return
        await self._on_share(event.share_id, event.secret)
