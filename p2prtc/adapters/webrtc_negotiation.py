"""How a link is negotiated: the ICE settings its peer connection gathers with, our session
description (candidates gathered, no trickle), and the other side's, checked and cleaned.

Where ICE may go is decided here, not by library defaults:

- `iceServers` is always an explicit list: aiortc falls back to a public STUN server
  when it is None, and p2prtc contacts nothing the user did not configure.
- `IceConfig.host_addresses` limits the local addresses host candidates are gathered
  on (aioice otherwise uses every interface except 127.0.0.1, and offers no option).
  See `_host_addresses_scope` for how that is done.
- mDNS (`.local`) candidates are never produced by aiortc, and remote ones are dropped
  before aiortc sees them, so aioice never starts its multicast resolver.
- Each ICE socket asks for a receive buffer of `UDP_RECEIVE_BUFFER_BYTES` (see there).

Part of the aiortc adapter: the link's constructors (adapters/webrtc.py) call these.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import aioice.ice
import aioice.turn
from aiortc import (
    InvalidAccessError,
    InvalidStateError,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from p2prtc.adapters.ice import IceConfig
from p2prtc.adapters.webrtc_errors import BadSessionDescription, NoUsableAddress

# aioice asks 256 KiB for each ICE socket's receive buffer. A notebook's state sent over a
# link comes in bursts faster than the event loop reads them (one datagram per wakeup, DTLS
# and SCTP in Python): a 1.7 MB state overflowed the buffer by 170 to 350 datagrams every
# time (/proc/net/snmp RcvbufErrors), and one such transfer in six then stalled on SCTP's
# retransmission timer (a join of 05.11 over an open link: 1.4 s instead of 0.3 s). With
# 4 MiB, none was dropped in 27 transfers. The kernel grants at most net.core.rmem_max (a
# bigger request costs nothing where it is lower). aioice reads it when it binds a socket.
UDP_RECEIVE_BUFFER_BYTES = 4 * 2**20
aioice.turn.UDP_SOCKET_BUFFER_SIZE = UDP_RECEIVE_BUFFER_BYTES


def rtc_configuration(config: IceConfig) -> RTCConfiguration:
    """aiortc's configuration, always with an explicit server list (never None)."""
    servers = [
        RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
        for s in config.servers
    ]
    policy = RTCIceTransportPolicy.RELAY if config.relay_only else RTCIceTransportPolicy.ALL
    return RTCConfiguration(iceServers=servers, iceTransportPolicy=policy)


async def set_local_description(
    pc: RTCPeerConnection, description: RTCSessionDescription, config: IceConfig
) -> str:
    """Set our description, gathering candidates on the configured addresses only; returns
    its SDP. Raises NoUsableAddress when none was gathered: ICE could never start."""
    with _host_addresses_scope(config.host_addresses):
        await pc.setLocalDescription(description)
    local = pc.localDescription
    assert local is not None, "set just above"
    if "\na=candidate:" not in local.sdp:
        raise NoUsableAddress("no ICE candidate could be gathered")
    return local.sdp


def require_data_section(sdp: str) -> None:
    """Raise BadSessionDescription unless `sdp` has a data channel section: aiortc accepts
    any text as a description, and one without it never opens."""
    if "\nm=application " not in sdp:
        raise BadSessionDescription("no data channel section")


async def set_remote_description(pc: RTCPeerConnection, sdp: str, kind: str) -> None:
    """Set the other side's description ("offer" or "answer"), its mDNS candidates dropped;
    raises BadSessionDescription when aiortc refuses it."""
    description = RTCSessionDescription(sdp=without_mdns_candidates(sdp), type=kind)
    try:
        await pc.setRemoteDescription(description)
    except (ValueError, InvalidStateError, InvalidAccessError) as exc:
        raise BadSessionDescription(str(exc)) from exc


def without_mdns_candidates(sdp: str) -> str:
    """`sdp` without `.local` candidates, whose resolution would multicast on every LAN."""
    lines = sdp.splitlines(keepends=True)
    return "".join(line for line in lines if not _is_mdns_candidate(line))


def _is_mdns_candidate(line: str) -> bool:
    # a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ ...
    fields = line.split()
    return line.startswith("a=candidate:") and len(fields) > 4 and fields[4].endswith(".local")


# --- confining host candidates -------------------------------------------------------
#
# aioice's Connection.gather_candidates() calls the module function
# aioice.ice.get_host_addresses() and has no per-connection option for it. We replace that
# function once by a wrapper that returns the addresses in a context variable when one is
# set, and defers to the original otherwise, so code that does not make links keeps
# aioice's behaviour. The variable is set only around setLocalDescription(), which is
# where aiortc gathers; asyncio copies the context into the tasks aiortc spawns there,
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
