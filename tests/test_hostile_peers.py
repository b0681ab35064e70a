"""Hostile peers (issue 6): an authenticated member that sends garbage to a real daemon.

The attacker (tests/evil_peer.py) joins the share legitimately with a join code, connects as
a member over WebRTC on loopback, and then sends: random bytes, a sync message for a document
that does not exist, an undecodable update, a chunk stream that never ends (within and beyond
the announced size), and one data channel message far over the 256 KiB the daemon advertises.

For each: the daemon disconnects it and logs why (``disconnecting <peer>: <reason>``, and the
ERROR frame the peer gets carries the reason), the peer is gone from ``status --json``, the
daemon keeps running with bounded memory (its peak RSS, from /proc), its file is untouched,
and an honest peer keeps syncing with it both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from daemons import (
    SAMPLE,
    Node,
    cell_source,
    copy_notebook,
    edit_cell,
    loopback_nodes,
    memory_mib,
    reset_peak_memory,
    share_and_join,
    wait_until,
)
from evil_peer import EvilPeer, Membership, first_sync_instead, redeem
from pycrdt import Doc, YMessageType, YSyncMessageType, create_sync_message

from p2prtc.adapters.webrtc_errors import LinkClosed
from p2prtc.adapters.webrtc_inbound import MAX_MESSAGE_SIZE
from p2prtc.adapters.webrtc_lifecycle import LinkState
from p2prtc.core.framing import (
    CHUNK_HEADER_SIZE,
    CHUNK_VERSION,
    DEFAULT_MAX_MESSAGE_BYTES,
    DOC_ID_SIZE,
    Frame,
    FrameKind,
    encode_frame,
)
from p2prtc.core.keys import SealedChannel
from p2prtc.daemon.dialer import PIPE_CHUNK_BYTES

pytestmark = pytest.mark.timeout(120)

DISCONNECT_TIMEOUT_S = 90.0  # pure-Python SCTP on a busy machine: 64 MiB can take a while
ANSWER_TIMEOUT_S = 30.0
_CHUNK_HEADER = struct.Struct("!BIII")
# What the daemon may hold on top of a maximum-size message being reassembled.
MEMORY_SLACK_MIB = 40
OVERSIZED_MESSAGE_BYTES = 2 * 1024 * 1024  # 8 times what the daemon advertises


@dataclass
class World:
    """Sharer A (the target), honest joiner B, and the membership the attacker obtained."""

    a: Node
    b: Node
    a_file: Path
    b_file: Path
    port: int  # A's rendezvous listener
    pid: int  # A's daemon
    membership: Membership


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, notebooks_dir: Path) -> Iterator[World]:
    root = tmp_path_factory.mktemp("hostile-peers")
    nodes = loopback_nodes(root, "a", "b")
    a, b = nodes
    a_file = copy_notebook(notebooks_dir / SAMPLE, a.workdir / "analysis.ipynb")
    try:
        b_file = share_and_join(a, b, a_file)
        port = int(a.status()["daemon"]["rendezvous_port"])
        code = a.json("invite", str(a_file))["code"]
        membership = asyncio.run(redeem(port, code))
        yield World(a, b, a_file, b_file, port, a.pid(), membership)
    finally:
        for node in nodes:
            node.shut_down()


async def status(node: Node) -> Any:
    return await asyncio.to_thread(node.status)


def peer_ids(share_status: dict[str, Any]) -> set[str]:
    return {peer["id"] for peer in share_status["peers"] if peer["connected"]}


@pytest.fixture
async def evil(world: World) -> AsyncIterator[EvilPeer]:
    """A fresh attacker connection, seen connected by A."""
    peer = await EvilPeer.connect(world.port, world.membership)

    async def seen() -> None:
        while peer.daemon_id not in peer_ids((await status(world.a))["shares"][0]):
            await asyncio.sleep(0.1)

    try:
        await asyncio.wait_for(seen(), 20)
        yield peer
    finally:
        await peer.close()


async def assert_disconnected(world: World, evil: EvilPeer, reason: str) -> None:
    """The daemon closed the link, said why in its log and to the peer, and forgot it."""
    await evil.wait_disconnected(DISCONNECT_TIMEOUT_S)
    log = (world.a.home / "daemon.log").read_text()
    lines = [line for line in log.splitlines() if f"disconnecting {evil.daemon_id}:" in line]
    assert lines, f"no disconnect reason logged for {evil.daemon_id}"
    assert reason in lines[-1]
    assert any(reason in sent for sent in evil.error_reasons)
    share = (await status(world.a))["shares"][0]
    assert evil.daemon_id not in peer_ids(share)


async def assert_unaffected(world: World, before: bytes, tag: str) -> None:
    """Same daemon, file untouched by the attacker, honest peer still syncing both ways."""
    assert (await status(world.a))["daemon"]["pid"] == world.pid
    assert world.a_file.read_bytes() == before
    edit_b, edit_a = f"B still syncs after {tag}", f"A still syncs after {tag}"
    await asyncio.to_thread(edit_cell, world.b_file, 2, edit_b)
    await asyncio.to_thread(
        wait_until, lambda: edit_b in cell_source(world.a_file, 2), 30, "B's edit on A"
    )
    await asyncio.to_thread(edit_cell, world.a_file, 3, edit_a)
    await asyncio.to_thread(
        wait_until, lambda: edit_a in cell_source(world.b_file, 3), 30, "A's edit on B"
    )


def chunk(message_id: int, index: int, count: int, data: bytes) -> bytes:
    return _CHUNK_HEADER.pack(CHUNK_VERSION, message_id, index, count) + data


def sync_message(update: bytes, kind: YSyncMessageType = YSyncMessageType.SYNC_UPDATE) -> bytes:
    """A y-sync message (an update unless ``kind`` says otherwise) whose length prefix is
    right, whatever ``update`` holds."""
    return bytes((YMessageType.SYNC, kind)) + varint(len(update)) + update


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


async def test_random_bytes_get_the_peer_disconnected(world: World, evil: EvilPeer) -> None:
    before = world.a_file.read_bytes()
    await evil.send_raw(bytes([CHUNK_VERSION + 1]) + os.urandom(300))
    await assert_disconnected(world, evil, "unsupported version of the p2prtc protocol")
    await assert_unaffected(world, before, "random bytes")


async def test_sync_for_an_unknown_document_gets_the_peer_disconnected(
    world: World, evil: EvilPeer
) -> None:
    before = world.a_file.read_bytes()
    unknown = os.urandom(DOC_ID_SIZE)
    frame = Frame(FrameKind.SYNC, unknown, sync_message(b"\x00\x00"))
    for message in evil.chunker.encode(frame):
        await evil.send_raw(message)
    await assert_disconnected(world, evil, f"sync message for unknown doc {unknown.hex()}")
    await assert_unaffected(world, before, "an unknown document")


async def test_undecodable_update_gets_the_peer_disconnected(world: World, evil: EvilPeer) -> None:
    before = world.a_file.read_bytes()
    frame = Frame(FrameKind.SYNC, world.membership.share_id, sync_message(os.urandom(64)))
    for message in evil.chunker.encode(frame):
        await evil.send_raw(message)
    await assert_disconnected(world, evil, "bad update for doc")
    await assert_unaffected(world, before, "an undecodable update")


async def test_chunk_count_beyond_the_limit_is_refused_at_once(
    world: World, evil: EvilPeer
) -> None:
    before = world.a_file.read_bytes()
    await evil.send_raw(chunk(1, 0, 2**32 - 1, b"x"))
    await assert_disconnected(world, evil, f"{2**32 - 1} chunks announced")
    await assert_unaffected(world, before, "an endless announced stream")


async def test_endless_chunk_stream_is_cut_at_the_size_limit(world: World, evil: EvilPeer) -> None:
    """Chunks of one frame that never ends: held up to the 64 MiB frame limit, then cut."""
    before = world.a_file.read_bytes()
    reset_peak_memory(world.pid)
    baseline = memory_mib(world.pid)["VmHWM"]
    data = b"\1" * (MAX_MESSAGE_SIZE - CHUNK_HEADER_SIZE)
    count = DEFAULT_MAX_MESSAGE_BYTES // len(data) * 4  # announced: within the count check
    index = 0
    with pytest.raises(LinkClosed):  # sending until the daemon hangs up
        while index <= count:
            await evil.send_raw(chunk(7, index, count, data))
            index += 1
    await assert_disconnected(world, evil, "larger than allowed")
    assert index * len(data) > DEFAULT_MAX_MESSAGE_BYTES  # it did read up to the limit
    peak = memory_mib(world.pid)["VmHWM"] - baseline
    assert peak < DEFAULT_MAX_MESSAGE_BYTES // 2**20 + MEMORY_SLACK_MIB, f"peak +{peak} MiB"
    await assert_unaffected(world, before, "an endless chunk stream")


async def test_message_over_the_advertised_size_gets_the_peer_disconnected(
    world: World, evil: EvilPeer
) -> None:
    """One data channel message 8 times the 256 KiB the daemon advertises.

    It carries a well-formed chunk and frame (LEAVE for a document nobody has, which the
    daemon otherwise ignores), so only its size can get the peer disconnected. A SyncStep1
    follows: an answer to it means the daemon took the oversized message.
    """
    before = world.a_file.read_bytes()
    frame = Frame(FrameKind.LEAVE, os.urandom(DOC_ID_SIZE), b"\0" * OVERSIZED_MESSAGE_BYTES)
    probe = Frame(FrameKind.SYNC, world.membership.share_id, create_sync_message(Doc()))
    answers = evil.frames_received
    evil.allow_oversized_messages()
    with contextlib.suppress(LinkClosed):
        await evil.send_raw(chunk(3, 0, 1, encode_frame(frame)))
        for message in evil.chunker.encode(probe):
            await evil.send_raw(message)

    async def answered_or_closed() -> None:
        while evil.frames_received == answers and evil.link.state is not LinkState.CLOSED:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(answered_or_closed(), ANSWER_TIMEOUT_S)
    assert evil.link.state is LinkState.CLOSED, "the daemon took the message and answered"
    log = (world.a.home / "daemon.log").read_text()
    assert f"over {MAX_MESSAGE_SIZE} bytes" in log
    assert evil.daemon_id not in peer_ids((await status(world.a))["shares"][0])
    await assert_unaffected(world, before, "an oversized message")


async def test_endless_state_over_the_rendezvous_pipe_is_cut_at_the_size_limit(
    world: World,
) -> None:
    """A member naming the ``pipesync`` feature sends a first state that never ends on the
    rendezvous pipe: held up to the same 64 MiB bound, then the pipe is closed."""
    before = world.a_file.read_bytes()
    reset_peak_memory(world.pid)
    baseline = memory_mib(world.pid)["VmHWM"]
    data = b"\1" * (PIPE_CHUNK_BYTES - CHUNK_HEADER_SIZE)
    count = DEFAULT_MAX_MESSAGE_BYTES // len(data) * 4  # announced: within the count check

    def endless_state(channel: SealedChannel) -> Iterator[bytes]:
        step1 = Frame(FrameKind.SYNC, world.membership.share_id, create_sync_message(Doc()))
        yield channel.seal(chunk(0, 0, 1, encode_frame(step1)))
        yield from (channel.seal(chunk(1, index, count, data)) for index in range(count))

    log_from = len(world.a.log())
    sent = await first_sync_instead(world.port, world.membership, endless_state)
    assert (sent - 1) * len(data) > DEFAULT_MAX_MESSAGE_BYTES  # it did read up to the limit
    assert sent < count  # and then hung up
    ended = [line for line in world.a.log(log_from).splitlines() if "rendezvous from" in line]
    assert ended and "larger than allowed" in ended[-1], ended
    peak = memory_mib(world.pid)["VmHWM"] - baseline
    assert peak < DEFAULT_MAX_MESSAGE_BYTES // 2**20 + MEMORY_SLACK_MIB, f"peak +{peak} MiB"
    await assert_unaffected(world, before, "an endless state on the pipe")


async def test_an_unreadable_state_over_the_rendezvous_pipe_changes_nothing(world: World) -> None:
    """A well-formed SyncStep2 on the pipe whose update pycrdt cannot read: the daemon ends
    that rendezvous saying why, and its doc, file and other peers are untouched."""
    before = world.a_file.read_bytes()
    share_id = world.membership.share_id

    def unreadable_state(channel: SealedChannel) -> Iterator[bytes]:
        step1 = Frame(FrameKind.SYNC, share_id, create_sync_message(Doc()))
        unreadable = sync_message(b"\xff\xff\xff\xff", YSyncMessageType.SYNC_STEP2)
        broken = Frame(FrameKind.SYNC, share_id, unreadable)
        for number, frame in enumerate((step1, broken)):
            yield channel.seal(chunk(number, 0, 1, encode_frame(frame)))

    log_from = len(world.a.log())
    assert await first_sync_instead(world.port, world.membership, unreadable_state) == 2
    ended = [line for line in world.a.log(log_from).splitlines() if "rendezvous from" in line]
    assert ended and "broke the first sync" in ended[-1] and "bad state" in ended[-1], ended
    await assert_unaffected(world, before, "an unreadable state on the pipe")
