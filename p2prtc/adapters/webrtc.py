"""WebRTC transport: one aiortc peer connection with one reliable, ordered data channel.

`PeerLink` is the only thing the daemon sees of aiortc (its `path`, adapters/webrtc_path.py,
reads the fingerprints and the selected path out of it). Signalling is the caller's job:
`PeerLink.offer()` returns the offer SDP, the caller delivers it (sealed) to the other
daemon which calls `PeerLink.answer()`, and the answer SDP comes back to `accept_answer()`.
Candidates are gathered before the SDP is returned (no trickle), so one round trip suffices.

Where ICE may go is decided here, not by library defaults:

- `iceServers` is always an explicit list: aiortc falls back to a public STUN server
  when it is None, and p2prtc contacts nothing the user did not configure.
- `IceConfig.host_addresses` limits the local addresses host candidates are gathered
  on (aioice otherwise uses every interface except 127.0.0.1, and offers no option).
  See `_host_addresses_scope` for how that is done.
- mDNS (`.local`) candidates are never produced by aiortc, and remote ones are dropped
  before aiortc sees them, so aioice never starts its multicast resolver.

The data channel is negotiated out of band (same id on both sides), so both ends own it
from the start and no in-band open handshake is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import itertools
import logging
from collections import Counter
from collections.abc import Callable, Iterator

import aioice.ice
from aiortc import (
    InvalidAccessError,
    InvalidStateError,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from aiortc.rtcsctptransport import (
    SCTP_DATA_UNORDERED,
    DataChunk,
    InboundStream,
    RTCSctpTransport,
)

from p2prtc.adapters.ice import IceConfig
from p2prtc.adapters.webrtc_path import LinkPath
from p2prtc.errors import P2PError

logger = logging.getLogger(__name__)

CHANNEL_LABEL = "p2prtc"
CHANNEL_ID = 0
# aiortc advertises (and accepts) messages up to 256 KiB.
MAX_MESSAGE_SIZE = 256 * 1024
# What one SCTP stream may hold in reassembly (see _BoundedInboundStream).
MAX_REASSEMBLY_BYTES = 64 * MAX_MESSAGE_SIZE
_SSN_MODULO = 2**16
# send() waits while more than HIGH_WATER bytes are queued, until LOW_WATER is reached.
HIGH_WATER = 1024 * 1024
LOW_WATER = 256 * 1024
# close() waits this long for the peer to take what was sent before closing.
CLOSE_GRACE = 2.0

_link_ids = itertools.count(1)


class WebRTCError(P2PError):
    """The peer-to-peer connection failed."""


class BadSessionDescription(WebRTCError):
    """The other daemon sent an unusable connection description."""


class NoUsableAddress(WebRTCError):
    """No local network address can be used for a peer-to-peer connection."""


class LinkOpenTimeout(WebRTCError):
    """The peer-to-peer connection did not open in time."""


class LinkClosed(WebRTCError):
    """The peer-to-peer connection is closed."""


class MessageTooLarge(WebRTCError):
    """A message is too large for the peer-to-peer connection."""


def rtc_configuration(config: IceConfig) -> RTCConfiguration:
    """aiortc's configuration, always with an explicit server list (never None)."""
    servers = [
        RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
        for s in config.servers
    ]
    policy = RTCIceTransportPolicy.RELAY if config.relay_only else RTCIceTransportPolicy.ALL
    return RTCConfiguration(iceServers=servers, iceTransportPolicy=policy)


# --- confining host candidates -------------------------------------------------------
#
# aioice's Connection.gather_candidates() calls the module function
# aioice.ice.get_host_addresses() and has no per-connection option for it. We replace that
# function once by a wrapper that returns the addresses in a context variable when one is
# set, and defers to the original otherwise, so code that does not use PeerLink keeps
# aioice's behaviour. PeerLink sets the variable only around setLocalDescription(), which
# is where aiortc gathers; asyncio copies the context into the tasks aiortc spawns there,
# so concurrent links with different address lists do not interfere.

_host_addresses: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "p2prtc_ice_host_addresses", default=None
)
_aioice_get_host_addresses = aioice.ice.get_host_addresses


def _scoped_get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    allowed = _host_addresses.get()
    if allowed is None:
        return _aioice_get_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
    return list(allowed)


@contextlib.contextmanager
def _host_addresses_scope(addresses: list[str] | None) -> Iterator[None]:
    """Within this block (and tasks started in it), aioice gathers on `addresses` only."""
    aioice.ice.get_host_addresses = _scoped_get_host_addresses
    token = _host_addresses.set(addresses)
    try:
        yield
    finally:
        _host_addresses.reset(token)


def without_mdns_candidates(sdp: str) -> str:
    """`sdp` without `.local` candidates, whose resolution would multicast on every LAN."""
    lines = sdp.splitlines(keepends=True)
    return "".join(line for line in lines if not _is_mdns_candidate(line))


def _is_mdns_candidate(line: str) -> bool:
    # a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ ...
    fields = line.split()
    return line.startswith("a=candidate:") and len(fields) > 4 and fields[4].endswith(".local")


def _require_data_section(sdp: str) -> None:
    # aiortc accepts any text as a description; one without a data section never opens.
    if "\nm=application " not in sdp:
        raise BadSessionDescription("no data channel section")


class LinkState(enum.Enum):
    NEGOTIATING = "negotiating"  # offer made, answer not yet accepted
    CONNECTING = "connecting"  # both descriptions set; ICE, DTLS and SCTP under way
    OPEN = "open"
    CLOSING = "closing"  # close() delivering what was sent before
    CLOSED = "closed"


class PeerLink:
    """A connection to one other daemon, carrying ordered, reliable binary messages.

    Create with `offer()` / `answer()`. Incoming messages: `await recv()` or
    `async for data in link` (ends when the link closes). `wait_closed()` returns the
    reason once the link is closed, whichever side or failure closed it.
    """

    def __init__(self, pc: RTCPeerConnection, channel: RTCDataChannel) -> None:
        self._id = next(_link_ids)
        self._pc = pc
        self._channel = channel
        self.path = LinkPath(pc)  # fingerprints and the selected path, for auth and status
        self._state = LinkState.NEGOTIATING
        self._close_reason = ""
        self._incoming: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._settled = asyncio.Event()  # open or closed
        self._closed = asyncio.Event()
        self._drained = asyncio.Event()
        self._shutdown: asyncio.Task[None] | None = None
        channel.bufferedAmountLowThreshold = LOW_WATER
        channel.on("open", self._on_open)
        channel.on("message", self._on_message)
        channel.on("bufferedamountlow", self._drained.set)
        channel.on("close", lambda: self._on_lost("data channel closed"))
        pc.on("connectionstatechange", self._on_connection_state)
        assert pc.sctp is not None  # created with the data channel
        _bound_inbound_messages(pc.sctp, self._on_lost)

    # --- construction ---------------------------------------------------------------

    @classmethod
    async def offer(cls, config: IceConfig) -> tuple[PeerLink, str]:
        """Start a link as the offering side; returns it and the offer SDP to deliver."""
        pc = RTCPeerConnection(rtc_configuration(config))
        link = cls(pc, _create_channel(pc))
        await link._set_local_description(await pc.createOffer(), config)
        return link, link._local_sdp()

    @classmethod
    async def answer(cls, config: IceConfig, offer_sdp: str) -> tuple[PeerLink, str]:
        """Accept a remote offer; returns the link and the answer SDP to send back."""
        _require_data_section(offer_sdp)
        pc = RTCPeerConnection(rtc_configuration(config))
        try:
            await _set_remote_description(pc, offer_sdp, "offer")
            link = cls(pc, _create_channel(pc))
            link._set_state(LinkState.CONNECTING)
            await link._set_local_description(await pc.createAnswer(), config)
        except BaseException:
            await pc.close()
            raise
        return link, link._local_sdp()

    async def accept_answer(self, answer_sdp: str) -> None:
        """Complete an offered link with the other side's answer; connecting starts.

        A bad answer closes the link (raises BadSessionDescription)."""
        if self._state is not LinkState.NEGOTIATING:
            raise LinkClosed(f"cannot accept an answer in state {self._state.value}")
        _require_data_section(answer_sdp)
        # CONNECTING before aiortc starts connecting, so the channel cannot open earlier.
        self._set_state(LinkState.CONNECTING)
        try:
            await _set_remote_description(self._pc, answer_sdp, "answer")
        except BadSessionDescription:
            await self.close()
            raise

    async def _set_local_description(
        self, description: RTCSessionDescription, config: IceConfig
    ) -> None:
        """Set our description, gathering candidates; without any, ICE could never start."""
        with _host_addresses_scope(config.host_addresses):
            await self._pc.setLocalDescription(description)
        if "\na=candidate:" not in self._local_sdp():
            await self.close()
            raise NoUsableAddress("no ICE candidate could be gathered")

    def _local_sdp(self) -> str:
        description = self._pc.localDescription
        assert description is not None, "set just before"
        return description.sdp

    # --- state ----------------------------------------------------------------------

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def buffered_amount(self) -> int:
        """Bytes queued by send() and not yet handed to SCTP."""
        return self._channel.bufferedAmount

    @property
    def close_reason(self) -> str:
        """Why the link closed ("" while it is not closed)."""
        return self._close_reason

    def _set_state(self, new: LinkState) -> None:
        logger.debug("link %d: %s -> %s", self._id, self._state.value, new.value)
        self._state = new

    def _on_open(self) -> None:
        if self._state is LinkState.CONNECTING:
            self._set_state(LinkState.OPEN)
            self._settled.set()

    def _on_connection_state(self) -> None:
        if self._pc.connectionState in ("failed", "closed"):
            self._on_lost(f"connection {self._pc.connectionState}")

    def _on_lost(self, reason: str) -> None:
        """The peer, the network or our close() ended the link: release aiortc's resources."""
        if self._state is LinkState.CLOSING:
            reason = "closed locally"
        if self._mark_closed(reason):
            self._shutdown = asyncio.ensure_future(self._pc.close())

    def _mark_closed(self, reason: str) -> bool:
        """Enter CLOSED and wake every waiter; False when already closed."""
        if self._state is LinkState.CLOSED:
            return False
        self._close_reason = reason
        self._set_state(LinkState.CLOSED)
        logger.info("link %d closed: %s", self._id, reason)
        self._incoming.put_nowait(None)
        for event in (self._settled, self._closed, self._drained):
            event.set()
        return True

    async def wait_open(self, timeout: float) -> None:
        """Return once the channel is open; on timeout the link is closed."""
        try:
            await asyncio.wait_for(self._settled.wait(), timeout)
        except TimeoutError:
            await self.close()
            raise LinkOpenTimeout(f"after {timeout:g} s") from None
        if self._state is LinkState.CLOSED:
            raise LinkClosed(self._close_reason)

    async def _close_channel_gracefully(self) -> None:
        # aiortc sends a closing channel's queued messages before resetting its stream, and
        # the channel only reports closed once the peer has reset its side too, that is,
        # after receiving everything sent before.
        self._set_state(LinkState.CLOSING)
        self._channel.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), CLOSE_GRACE)

    async def wait_closed(self) -> str:
        """Wait until the link is closed, by either side or a failure; returns the reason."""
        await self._closed.wait()
        return self._close_reason

    async def close(self) -> None:
        """Close the link and release its sockets; the other side notices at once.

        Messages already passed to send() are delivered first when the peer acknowledges
        within CLOSE_GRACE seconds (aiortc alone would abort the association and drop them).
        """
        if self._state is LinkState.OPEN:
            await self._close_channel_gracefully()
        self._mark_closed("closed locally")
        await self._pc.close()
        if self._shutdown is not None:
            await self._shutdown

    # --- data -----------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        """Queue one message; waits while too much is already queued (backpressure)."""
        while self._state is LinkState.OPEN and self._channel.bufferedAmount > HIGH_WATER:
            self._drained.clear()
            await self._drained.wait()
        if self._state is not LinkState.OPEN:
            raise LinkClosed(self._close_reason or f"link is {self._state.value}")
        try:
            self._channel.send(data)
        except ValueError as exc:  # aiortc's check against the peer's max-message-size
            raise MessageTooLarge(f"{len(data)} bytes") from exc
        except InvalidStateError as exc:
            raise LinkClosed("data channel closed") from exc

    def _on_message(self, message: bytes | str) -> None:
        if isinstance(message, str):
            logger.warning("link %d: text message dropped (binary expected)", self._id)
            return
        self._incoming.put_nowait(message)

    async def recv(self) -> bytes:
        """The next message; raises LinkClosed once the link is closed and drained."""
        message = await self._incoming.get()
        if message is None:
            self._incoming.put_nowait(None)  # so every later recv() ends too
            raise LinkClosed(self._close_reason)
        return message

    def __aiter__(self) -> PeerLink:
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


def _bound_inbound_messages(sctp: RTCSctpTransport, on_overflow: Callable[[str], None]) -> None:
    """Make ``sctp`` reassemble through _BoundedInboundStream (aiortc has no option for it)."""
    streams: dict[int, InboundStream] = sctp._inbound_streams

    def get_inbound_stream(stream_id: int) -> InboundStream:
        if stream_id not in streams:
            streams[stream_id] = _BoundedInboundStream(on_overflow)
        return streams[stream_id]

    sctp._get_inbound_stream = get_inbound_stream  # type: ignore[method-assign]


def _create_channel(pc: RTCPeerConnection) -> RTCDataChannel:
    return pc.createDataChannel(CHANNEL_LABEL, ordered=True, negotiated=True, id=CHANNEL_ID)


async def _set_remote_description(pc: RTCPeerConnection, sdp: str, kind: str) -> None:
    description = RTCSessionDescription(sdp=without_mdns_candidates(sdp), type=kind)
    try:
        await pc.setRemoteDescription(description)
    except (ValueError, InvalidStateError, InvalidAccessError) as exc:
        raise BadSessionDescription(str(exc)) from exc
