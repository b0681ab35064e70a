"""PeerLink over real aiortc connections: loopback in-process, and two namespaces as a LAN.

Run as a script (`python tests/test_webrtc.py offer|answer`), this file is the agent the
namespace test starts on each simulated machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from netns import NetnsLab

from p2prtc.adapters.ice import IceConfig, IceServer
from p2prtc.adapters.webrtc import HIGH_WATER, PeerLink, make_answer, make_offer
from p2prtc.adapters.webrtc_errors import (
    BadSessionDescription,
    LinkClosed,
    LinkOpenTimeout,
    MessageTooLarge,
    NoUsableAddress,
)
from p2prtc.adapters.webrtc_inbound import MAX_MESSAGE_SIZE
from p2prtc.adapters.webrtc_lifecycle import LinkState
from p2prtc.adapters.webrtc_negotiation import (
    UDP_RECEIVE_BUFFER_BYTES,
    rtc_configuration,
    without_mdns_candidates,
)

pytestmark = pytest.mark.timeout(30)

OPEN_TIMEOUT = 10.0
OFFERER = IceConfig(host_addresses=["127.0.0.1"])
ANSWERER = IceConfig(host_addresses=["127.0.0.2"])


def candidate_addresses(sdp: str) -> set[str]:
    return {address for address, _ in candidates(sdp)}


def candidates(sdp: str) -> set[tuple[str, int]]:
    # a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ ...
    fields = [line.split() for line in sdp.splitlines() if line.startswith("a=candidate:")]
    return {(field[4], int(field[5])) for field in fields}


def udp_receive_buffers(bound_to: set[tuple[str, int]]) -> list[int]:
    """The receive buffer the kernel gave each of this process's UDP sockets bound there."""
    sizes = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            with socket.socket(fileno=os.dup(int(fd))) as sock:
                if sock.type == socket.SOCK_DGRAM and sock.getsockname() in bound_to:
                    sizes.append(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
        except OSError:
            continue  # not a socket (or gone meanwhile)
    return sizes


async def connect(offerer: IceConfig, answerer: IceConfig) -> tuple[PeerLink, PeerLink]:
    a, offer = await make_offer(offerer)
    b, answer = await make_answer(answerer, offer)
    await a.accept_answer(answer)
    await asyncio.gather(a.wait_open(OPEN_TIMEOUT), b.wait_open(OPEN_TIMEOUT))
    return a, b


async def receive(link: PeerLink, count: int) -> list[bytes]:
    return [await link.recv() for _ in range(count)]


@pytest.fixture
async def links() -> AsyncIterator[tuple[PeerLink, PeerLink]]:
    a, b = await connect(OFFERER, ANSWERER)
    yield a, b
    await asyncio.gather(a.close(), b.close())


async def test_sdp_offers_only_the_allowed_addresses() -> None:
    a, offer = await make_offer(OFFERER)
    b, answer = await make_answer(ANSWERER, offer)
    try:
        assert candidate_addresses(offer) == {"127.0.0.1"}
        assert candidate_addresses(answer) == {"127.0.0.2"}
        assert ".local" not in offer + answer
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_concurrent_links_keep_their_own_addresses() -> None:
    configs = [IceConfig(host_addresses=[f"127.0.0.{i}"]) for i in range(1, 6)]
    made = await asyncio.gather(*(make_offer(config) for config in configs))
    try:
        for i, (_, offer) in enumerate(made, start=1):
            assert candidate_addresses(offer) == {f"127.0.0.{i}"}
    finally:
        await asyncio.gather(*(link.close() for link, _ in made))


async def test_open_link_reports_path_and_fingerprints(links: tuple[PeerLink, PeerLink]) -> None:
    a, b = links
    assert a.state is LinkState.OPEN and b.state is LinkState.OPEN
    assert a.path.path_type() == "host"
    remote = a.path.remote_address()
    assert remote is not None and remote[0] == "127.0.0.2"
    assert a.path.local_fingerprints() == b.path.remote_fingerprints()
    assert b.path.local_fingerprints() == a.path.remote_fingerprints()
    assert any(f.startswith("sha-256 ") for f in a.path.local_fingerprints())
    assert a.path.local_fingerprints() != b.path.local_fingerprints()


async def test_link_sockets_hold_a_burst_of_a_notebook_state() -> None:
    """Each ICE socket gets a receive buffer of UDP_RECEIVE_BUFFER_BYTES, or all the system
    allows: a burst the event loop has no time to read yet is kept, not dropped (drops
    stalled a 1.7 MB transfer on SCTP's retransmission timer)."""
    a, offer = await make_offer(OFFERER)
    b, answer = await make_answer(ANSWERER, offer)
    try:
        sizes = udp_receive_buffers(candidates(offer) | candidates(answer))
        rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
        assert len(sizes) == 2  # one socket each: one address, one component
        assert all(size >= 2 * min(UDP_RECEIVE_BUFFER_BYTES, rmem_max) for size in sizes)
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_bytes_flow_both_ways_in_order(links: tuple[PeerLink, PeerLink]) -> None:
    a, b = links
    big = bytes(range(256)) * (MAX_MESSAGE_SIZE // 256)
    small = [i.to_bytes(4, "big") for i in range(500)]
    for sender, receiver in ((a, b), (b, a)):
        await sender.send(big)
        for message in small:
            await sender.send(message)
        assert await receive(receiver, 1 + len(small)) == [big, *small]


async def test_send_waits_while_too_much_is_queued(links: tuple[PeerLink, PeerLink]) -> None:
    a, b = links
    message = b"x" * MAX_MESSAGE_SIZE
    count = 16
    reader = asyncio.create_task(receive(b, count))
    for _ in range(count):
        await a.send(message)
        assert a.buffered_amount <= HIGH_WATER + len(message)
    assert await reader == [message] * count


async def test_too_large_message_is_refused_and_link_survives(
    links: tuple[PeerLink, PeerLink],
) -> None:
    a, b = links
    with pytest.raises(MessageTooLarge):
        await a.send(b"x" * (MAX_MESSAGE_SIZE + 1))
    await a.send(b"still open")
    assert await b.recv() == b"still open"


async def test_other_side_closing_is_detected(links: tuple[PeerLink, PeerLink]) -> None:
    a, b = links
    await b.send(b"last words")
    await b.close()
    reason = await asyncio.wait_for(a.wait_closed(), OPEN_TIMEOUT)
    assert reason
    assert a.state is LinkState.CLOSED
    assert [message async for message in a] == [b"last words"]
    with pytest.raises(LinkClosed):
        await a.send(b"too late")


async def test_wait_open_times_out_without_answer() -> None:
    link, _ = await make_offer(OFFERER)
    with pytest.raises(LinkOpenTimeout):
        await link.wait_open(0.2)
    assert link.state is LinkState.CLOSED


async def test_unusable_host_address_is_reported() -> None:
    # 192.0.2.1 (TEST-NET-1) is no local address: binding fails, nothing is sent.
    with pytest.raises(NoUsableAddress):
        await make_offer(IceConfig(host_addresses=["192.0.2.1"]))


@pytest.mark.parametrize("sdp", ["", "garbage", "v=0\r\nm=audio 9 RTP/AVP 0\r\n"])
async def test_unusable_offer_is_rejected(sdp: str) -> None:
    with pytest.raises(BadSessionDescription):
        await make_answer(ANSWERER, sdp)


def test_mdns_candidates_are_dropped() -> None:
    host = "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n"
    mdns = "a=candidate:2 1 udp 2130706431 0b1e0c3f-5a6e-4c2b.local 5001 typ host\r\n"
    sdp = f"v=0\r\n{host}{mdns}a=end-of-candidates\r\n"
    assert without_mdns_candidates(sdp) == f"v=0\r\n{host}a=end-of-candidates\r\n"


def test_ice_config_never_leaves_servers_unset() -> None:
    assert rtc_configuration(IceConfig()).iceServers == []


def test_relay_only_needs_a_turn_server() -> None:
    with pytest.raises(ValueError, match="TURN"):
        IceConfig(servers=[IceServer(urls=["stun:127.0.0.1:3478"])], relay_only=True)
    assert IceConfig(servers=[IceServer(urls=["turn:127.0.0.1"], username="u", credential="p")])


# --- two machines: namespaces on a bridge, default gathering --------------------------


@pytest.mark.netns
def test_link_between_two_namespaces() -> None:
    with NetnsLab(2) as lab:
        offerer = lab.spawn_agent(lab.nodes[0], [__file__, "offer"])
        answerer = lab.spawn_agent(lab.nodes[1], [__file__, "answer"])
        offer = offerer.expect()
        answerer.send(offer)
        offerer.send(answerer.expect())
        report = offerer.expect()
        assert offerer.wait() == 0
        assert answerer.wait() == 0
    # Namespaces have lo and veth0 only; aioice skips 127.0.0.1: the LAN address is all.
    assert candidate_addresses(offer["sdp"]) == {lab.nodes[0].address}
    assert report == {"reply": "pong", "path": "host", "peer": lab.nodes[1].address}


def _say(message: dict[str, str | None]) -> None:
    print(json.dumps(message), flush=True)


def _hear() -> str:
    sdp: str = json.loads(sys.stdin.readline())["sdp"]
    return sdp


async def _agent(role: str) -> None:
    """One side of test_link_between_two_namespaces; SDP travels as JSON lines on stdio."""
    config = IceConfig()  # aioice's own choice of addresses: inside a namespace, its veth
    if role == "offer":
        link, offer = await make_offer(config)
        _say({"sdp": offer})
        await link.accept_answer(_hear())
        await link.wait_open(OPEN_TIMEOUT)
        await link.send(b"ping")
        reply = await link.recv()
        remote = link.path.remote_address()
        peer = remote[0] if remote else None
        _say({"reply": reply.decode(), "path": link.path.path_type(), "peer": peer})
        await link.close()
    else:
        link, answer = await make_answer(config, _hear())
        _say({"sdp": answer})
        await link.wait_open(OPEN_TIMEOUT)
        if await link.recv() == b"ping":
            await link.send(b"pong")
        await asyncio.wait_for(link.wait_closed(), OPEN_TIMEOUT)


if __name__ == "__main__":
    asyncio.run(_agent(sys.argv[1]))
