"""WebRTC transport: one aiortc peer connection with one reliable, ordered data channel.

`PeerLink` is the only thing the daemon sees of aiortc. Signalling is the caller's job:
`make_offer()` returns a link and the offer SDP, the caller delivers it (sealed) to the
other daemon which calls `make_answer()`, and the answer SDP comes back to the offering
link's `accept_answer()`. Candidates are gathered before the SDP is returned (no trickle),
so one round trip suffices.

The link is made of parts, one module each: webrtc_negotiation.py (ICE settings and the
session descriptions), webrtc_lifecycle.py (states and waiters), webrtc_inbound.py (bounded
reassembly and the inbox), webrtc_path.py (fingerprints and the selected path, as
`PeerLink.path`), webrtc_errors.py. This module owns the link itself: it wires the parts to
aiortc's events, and owns sending (with backpressure) and closing.

The data channel is negotiated out of band (same id on both sides), so both ends own it
from the start and no in-band open handshake is needed.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiortc import InvalidStateError, RTCDataChannel, RTCPeerConnection

from p2prtc.adapters.ice import IceConfig
from p2prtc.adapters.webrtc_errors import (
    BadSessionDescription,
    LinkClosed,
    LinkOpenTimeout,
    MessageTooLarge,
    NoUsableAddress,
)
from p2prtc.adapters.webrtc_inbound import Inbox, bound_inbound_messages
from p2prtc.adapters.webrtc_lifecycle import LinkLifecycle, LinkState
from p2prtc.adapters.webrtc_negotiation import (
    require_data_section,
    rtc_configuration,
    set_local_description,
    set_remote_description,
)
from p2prtc.adapters.webrtc_path import LinkPath

CHANNEL_LABEL = "p2prtc"
CHANNEL_ID = 0
# send() waits while more than HIGH_WATER bytes are queued, until LOW_WATER is reached.
HIGH_WATER = 1024 * 1024
LOW_WATER = 256 * 1024
# close() waits this long for the peer to take what was sent before closing.
CLOSE_GRACE = 2.0


async def make_offer(config: IceConfig) -> tuple[PeerLink, str]:
    """Start a link as the offering side; returns it and the offer SDP to deliver."""
    pc = RTCPeerConnection(rtc_configuration(config))
    link = PeerLink(pc, _create_channel(pc), LinkLifecycle())
    try:
        offer = await set_local_description(pc, await pc.createOffer(), config)
    except NoUsableAddress:
        await link.close()
        raise
    return link, offer


async def make_answer(config: IceConfig, offer_sdp: str) -> tuple[PeerLink, str]:
    """Accept a remote offer; returns the link and the answer SDP to send back."""
    require_data_section(offer_sdp)
    pc = RTCPeerConnection(rtc_configuration(config))
    try:
        await set_remote_description(pc, offer_sdp, "offer")
        lifecycle = LinkLifecycle()
        link = PeerLink(pc, _create_channel(pc), lifecycle)
        lifecycle.set_state(LinkState.CONNECTING)
        try:
            answer = await set_local_description(pc, await pc.createAnswer(), config)
        except NoUsableAddress:
            await link.close()
            raise
    except BaseException:
        await pc.close()
        raise
    return link, answer


class PeerLink:
    """A connection to one other daemon, carrying ordered, reliable binary messages.

    Made by `make_offer()` / `make_answer()`. Incoming messages: `await recv()` or
    `async for data in link` (ends when the link closes). `wait_closed()` returns the
    reason once the link is closed, whichever side or failure closed it.
    """

    def __init__(
        self, pc: RTCPeerConnection, channel: RTCDataChannel, lifecycle: LinkLifecycle
    ) -> None:
        self._pc = pc
        self._channel = channel
        self._life = lifecycle
        self.path = LinkPath(pc)  # fingerprints and the selected path, for auth and status
        self._inbox = Inbox(lifecycle.id)
        self._drained = asyncio.Event()
        self._shutdown: asyncio.Task[None] | None = None
        channel.bufferedAmountLowThreshold = LOW_WATER
        channel.on("open", lifecycle.opened)
        channel.on("message", self._inbox.put)
        channel.on("bufferedamountlow", self._drained.set)
        channel.on("close", lambda: self._on_lost("data channel closed"))
        pc.on("connectionstatechange", self._on_connection_state)
        assert pc.sctp is not None  # created with the data channel
        bound_inbound_messages(pc.sctp, self._on_lost)

    async def accept_answer(self, answer_sdp: str) -> None:
        """Complete an offered link with the other side's answer; connecting starts.

        A bad answer closes the link (raises BadSessionDescription)."""
        if self.state is not LinkState.NEGOTIATING:
            raise LinkClosed(f"cannot accept an answer in state {self.state.value}")
        require_data_section(answer_sdp)
        # CONNECTING before aiortc starts connecting, so the channel cannot open earlier.
        self._life.set_state(LinkState.CONNECTING)
        try:
            await set_remote_description(self._pc, answer_sdp, "answer")
        except BadSessionDescription:
            await self.close()
            raise

    # --- state ----------------------------------------------------------------------

    @property
    def state(self) -> LinkState:
        return self._life.state

    @property
    def buffered_amount(self) -> int:
        """Bytes queued by send() and not yet handed to SCTP."""
        return self._channel.bufferedAmount

    @property
    def close_reason(self) -> str:
        """Why the link closed ("" while it is not closed)."""
        return self._life.close_reason

    def _on_connection_state(self) -> None:
        if self._pc.connectionState in ("failed", "closed"):
            self._on_lost(f"connection {self._pc.connectionState}")

    def _on_lost(self, reason: str) -> None:
        """The peer, the network or our close() ended the link: release aiortc's resources."""
        if self.state is LinkState.CLOSING:
            reason = "closed locally"
        if self._mark_closed(reason):
            self._shutdown = asyncio.ensure_future(self._pc.close())

    def _mark_closed(self, reason: str) -> bool:
        """Enter CLOSED and wake every waiter, readers and senders too; False when already
        closed."""
        if not self._life.end(reason):
            return False
        self._inbox.end(reason)
        self._drained.set()
        return True

    async def wait_open(self, timeout: float) -> None:
        """Return once the channel is open; on timeout the link is closed."""
        try:
            await asyncio.wait_for(self._life.wait_settled(), timeout)
        except TimeoutError:
            await self.close()
            raise LinkOpenTimeout(f"after {timeout:g} s") from None
        if self.state is LinkState.CLOSED:
            raise LinkClosed(self.close_reason)

    async def _close_channel_gracefully(self) -> None:
        # aiortc sends a closing channel's queued messages before resetting its stream, and
        # the channel only reports closed once the peer has reset its side too, that is,
        # after receiving everything sent before.
        self._life.set_state(LinkState.CLOSING)
        self._channel.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._life.wait_closed(), CLOSE_GRACE)

    async def wait_closed(self) -> str:
        """Wait until the link is closed, by either side or a failure; returns the reason."""
        return await self._life.wait_closed()

    async def close(self) -> None:
        """Close the link and release its sockets; the other side notices at once.

        Messages already passed to send() are delivered first when the peer acknowledges
        within CLOSE_GRACE seconds (aiortc alone would abort the association and drop them).
        """
        if self.state is LinkState.OPEN:
            await self._close_channel_gracefully()
        self._mark_closed("closed locally")
        await self._pc.close()
        if self._shutdown is not None:
            await self._shutdown

    # --- data -----------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        """Queue one message; waits while too much is already queued (backpressure)."""
        while self.state is LinkState.OPEN and self._channel.bufferedAmount > HIGH_WATER:
            self._drained.clear()
            await self._drained.wait()
        if self.state is not LinkState.OPEN:
            raise LinkClosed(self.close_reason or f"link is {self.state.value}")
        try:
            self._channel.send(data)
        except ValueError as exc:  # aiortc's check against the peer's max-message-size
            raise MessageTooLarge(f"{len(data)} bytes") from exc
        except InvalidStateError as exc:
            raise LinkClosed("data channel closed") from exc

    async def recv(self) -> bytes:
        """The next message; raises LinkClosed once the link is closed and drained."""
        return await self._inbox.recv()

    def __aiter__(self) -> Inbox:
        return self._inbox


def _create_channel(pc: RTCPeerConnection) -> RTCDataChannel:
    return pc.createDataChannel(CHANNEL_LABEL, ordered=True, negotiated=True, id=CHANNEL_ID)
