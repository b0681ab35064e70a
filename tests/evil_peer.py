"""A hostile member for tests: joins a share legitimately, then misbehaves on the data channel.

It speaks the real protocol with p2prtc's own parts, in the test's event loop: the invitation
(SPAKE2 on the join code over a rendezvous pipe, as ``Joining._redeem_at``), then a member
handshake and the sealed SDP offer/answer (``links.offer_link``), which gives it an open WebRTC
link to the daemon, authenticated for the share. From there it sends whatever a test wants:
raw data channel messages, chunks, or well-formed frames. ``first_sync_instead`` stops after
the handshake: it sends its own messages where the first sync round over the pipe goes.

A reader task reassembles what the daemon sends, so a test can see the ERROR frame carrying
the reason the daemon gives before it disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from p2prtc.adapters.ice import IceConfig
from p2prtc.adapters.rendezvous import PipeClosed, connect_pipe
from p2prtc.adapters.webrtc import PeerLink
from p2prtc.core.codes import parse_code
from p2prtc.core.framing import (
    Chunker,
    FrameKind,
    FramingError,
    Reassembler,
    error_reason,
)
from p2prtc.core.handshake import Authenticated, InviteJoiner, MemberInitiator, Welcomed
from p2prtc.core.keys import SealedChannel
from p2prtc.core.messages import Welcome
from p2prtc.core.pipesync import PIPE_SYNC_FEATURE
from p2prtc.daemon.links import offer_link
from p2prtc.daemon.pipes import HANDSHAKE_TIMEOUT_S, envelope, expect_ok, run_handshake

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Membership:
    """What a daemon's welcome gives a new member."""

    share_id: bytes
    secret: bytes
    name: str
    members: list[str]


async def redeem(port: int, code: str) -> Membership:
    """Join with ``code`` at the daemon whose rendezvous listener is 127.0.0.1:``port``."""
    pipe = await connect_pipe(LOOPBACK, port, HANDSHAKE_TIMEOUT_S)
    try:
        join_code = parse_code(code)
        await pipe.send(envelope("invite", nameplate=join_code.nameplate))
        await expect_ok(pipe)
        welcomed = await run_handshake(pipe, InviteJoiner(join_code))
        assert isinstance(welcomed, Welcomed)
    finally:
        await pipe.close()
    welcome = Welcome.decode(welcomed.payload)
    return Membership(welcome.share_id, welcome.secret, welcome.name, list(welcome.members))


async def first_sync_instead(
    port: int, membership: Membership, messages: Callable[[SealedChannel], Iterator[bytes]]
) -> int:
    """Dial the daemon as a member that names the ``pipesync`` feature, then send, on the
    pipe, instead of an honest first sync round (core/pipesync.py), the ``messages`` made
    with the handshake's sealed channel, until they end or the daemon closes the pipe; then
    read what the daemon sends until it closes the pipe. How many messages it sent."""
    identity = f"{secrets.token_hex(8)}/run/{PIPE_SYNC_FEATURE}"
    pipe = await connect_pipe(LOOPBACK, port, HANDSHAKE_TIMEOUT_S)
    sent = 0
    try:
        await pipe.send(envelope("member"))
        await expect_ok(pipe)
        machine = MemberInitiator(membership.share_id, membership.secret, identity)
        auth = await run_handshake(pipe, machine)
        assert isinstance(auth, Authenticated)
        with contextlib.suppress(PipeClosed):
            for message in messages(auth.channel):
                await pipe.send(message)
                sent += 1
            while True:  # the daemon hangs up once it has judged what it got
                await pipe.recv(HANDSHAKE_TIMEOUT_S)
    finally:
        await pipe.close()
    return sent


class EvilPeer:
    """An authenticated member's open link to a daemon; it sends what a test tells it to."""

    def __init__(self, link: PeerLink, daemon_id: str, peer_id: str) -> None:
        self.link = link
        self.daemon_id = daemon_id
        self.peer_id = peer_id  # the daemon it is connected to
        self.chunker = Chunker()
        self.error_reasons: list[str] = []  # ERROR frames the daemon sent us
        self.frames_received = 0
        self._reader = asyncio.create_task(self._read(), name="evil peer reader")

    @classmethod
    async def connect(cls, port: int, membership: Membership, identity_tail: str = "") -> EvilPeer:
        """Dial the daemon at 127.0.0.1:``port`` as a member and open the data channel;
        ``identity_tail`` follows the daemon id in its handshake identity (``run/...``)."""
        daemon_id = secrets.token_hex(8)
        pipe = await connect_pipe(LOOPBACK, port, HANDSHAKE_TIMEOUT_S)
        try:
            await pipe.send(envelope("member"))
            await expect_ok(pipe)
            identity = f"{daemon_id}/{identity_tail}" if identity_tail else daemon_id
            machine = MemberInitiator(membership.share_id, membership.secret, identity)
            auth = await run_handshake(pipe, machine)
            assert isinstance(auth, Authenticated)
            ice = IceConfig(servers=[], host_addresses=[LOOPBACK])
            link = await offer_link(pipe, auth, ice)
        finally:
            await pipe.close()
        return cls(link, daemon_id, auth.peer_daemon_id)

    async def _read(self) -> None:
        reassembler = Reassembler()
        async for message in self.link:
            try:
                frame = reassembler.feed(message)
            except FramingError as exc:
                logger.warning("the daemon sent a malformed message: %s", exc)
                continue
            if frame is None:
                continue
            self.frames_received += 1
            if frame.kind is FrameKind.ERROR:
                self.error_reasons.append(error_reason(frame))

    async def send_raw(self, message: bytes) -> None:
        """One data channel message, as is."""
        await self.link.send(message)

    def allow_oversized_messages(self) -> None:
        """Lift aiortc's sender-side check against the daemon's advertised 256 KiB limit.

        A hostile peer is not bound by it: this is what a modified client would do.
        """
        sctp = self.link._pc.sctp
        assert sctp is not None
        sctp._remote_max_message_size = 0  # aiortc skips the check when it is falsy

    async def wait_disconnected(self, timeout: float) -> str:
        """Wait until the daemon closes the link; returns the link's close reason."""
        reason = await asyncio.wait_for(self.link.wait_closed(), timeout)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._reader), 1.0)
        return reason

    async def close(self) -> None:
        await self.link.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
