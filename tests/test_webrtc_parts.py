"""The WebRTC link's parts that need no connection: its state machine, its inbox, and the
bounded reassembly of what a peer sends (fed aiortc's own SCTP chunks, no socket)."""

from __future__ import annotations

import asyncio

import pytest
from aiortc.rtcsctptransport import (
    SCTP_DATA_FIRST_FRAG,
    SCTP_DATA_LAST_FRAG,
    SCTP_DATA_UNORDERED,
    DataChunk,
)

from p2prtc.adapters.webrtc_errors import LinkClosed
from p2prtc.adapters.webrtc_inbound import (
    MAX_MESSAGE_SIZE,
    MAX_REASSEMBLY_BYTES,
    Inbox,
    _BoundedInboundStream,
)
from p2prtc.adapters.webrtc_lifecycle import LinkLifecycle, LinkState

WHOLE = SCTP_DATA_FIRST_FRAG | SCTP_DATA_LAST_FRAG


# --- the state machine ----------------------------------------------------------------------


async def test_channel_opening_before_the_answer_does_not_open_the_link() -> None:
    life = LinkLifecycle()
    life.opened()
    assert life.state is LinkState.NEGOTIATING
    life.set_state(LinkState.CONNECTING)
    life.opened()
    assert life.state is LinkState.OPEN
    await asyncio.wait_for(life.wait_settled(), 1)


async def test_closing_wakes_who_waits_for_open_and_keeps_the_first_reason() -> None:
    life = LinkLifecycle()
    life.set_state(LinkState.CONNECTING)
    settled = asyncio.ensure_future(life.wait_settled())
    closed = asyncio.ensure_future(life.wait_closed())
    await asyncio.sleep(0)
    assert not settled.done() and life.close_reason == ""
    assert life.end("connection failed")
    assert not life.end("closed locally")
    life.opened()  # a late open event changes nothing
    await asyncio.wait_for(settled, 1)
    assert await asyncio.wait_for(closed, 1) == "connection failed"
    assert (life.state, life.close_reason) == (LinkState.CLOSED, "connection failed")


def test_links_are_numbered_apart() -> None:
    assert LinkLifecycle().id != LinkLifecycle().id


# --- the inbox ------------------------------------------------------------------------------


async def test_inbox_keeps_binary_messages_in_order_and_drops_text() -> None:
    inbox = Inbox(1)
    for message in (b"one", "text", b"two"):
        inbox.put(message)
    assert [await inbox.recv(), await inbox.recv()] == [b"one", b"two"]


async def test_ended_inbox_gives_what_it_holds_then_ends_every_reader() -> None:
    inbox = Inbox(1)
    inbox.put(b"last words")
    inbox.end("data channel closed")
    assert [message async for message in inbox] == [b"last words"]
    for _ in range(2):
        with pytest.raises(LinkClosed, match="data channel closed"):
            await inbox.recv()


# --- bounded reassembly ---------------------------------------------------------------------


def chunk(tsn: int, seq: int, size: int, flags: int = WHOLE) -> DataChunk:
    made = DataChunk(flags=flags)
    made.tsn, made.stream_seq, made.user_data = tsn, seq, b"x" * size
    return made


def stream() -> tuple[_BoundedInboundStream, list[str]]:
    problems: list[str] = []
    return _BoundedInboundStream(problems.append), problems


def test_messages_within_the_limits_are_reassembled() -> None:
    inbound, problems = stream()
    inbound.add_chunk(chunk(1, 0, 1000, SCTP_DATA_FIRST_FRAG))
    inbound.add_chunk(chunk(2, 0, MAX_MESSAGE_SIZE - 1000, SCTP_DATA_LAST_FRAG))
    inbound.add_chunk(chunk(3, 1, 10))
    assert [len(data) for _, _, data in inbound.pop_messages()] == [MAX_MESSAGE_SIZE, 10]
    assert problems == []


def test_a_message_over_the_limit_is_refused_once() -> None:
    inbound, problems = stream()
    inbound.add_chunk(chunk(1, 0, MAX_MESSAGE_SIZE, SCTP_DATA_FIRST_FRAG))
    inbound.add_chunk(chunk(2, 0, 1, 0))
    inbound.add_chunk(chunk(3, 0, 1, SCTP_DATA_LAST_FRAG))  # after the overflow: ignored
    assert problems == [f"the peer sent a message over {MAX_MESSAGE_SIZE} bytes"]
    assert list(inbound.pop_messages()) == []


def test_unfinished_messages_past_a_gap_are_bounded() -> None:
    inbound, problems = stream()
    # Message 0 never arrives: everything after it waits in reassembly.
    count = MAX_REASSEMBLY_BYTES // MAX_MESSAGE_SIZE + 1
    for seq in range(1, count + 1):
        inbound.add_chunk(chunk(seq, seq, MAX_MESSAGE_SIZE))
    assert problems == [f"the peer left over {MAX_REASSEMBLY_BYTES} bytes unfinished"]


def test_unordered_data_is_refused() -> None:
    inbound, problems = stream()
    inbound.add_chunk(chunk(1, 0, 10, WHOLE | SCTP_DATA_UNORDERED))
    assert problems == ["the peer sent unordered data on an ordered channel"]
