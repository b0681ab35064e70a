"""PipeSync: a share's first y-sync round over a sealed rendezvous pipe, driven without I/O.

Two machines exchange sealed messages in memory, in the order a pipe delivers them; the
state one receives is merged with ``apply_sync_message`` as the daemon does, and
must leave the doc exactly as a SyncStep2 over the data channel would. Hostile input (a
state over the bound, frames out of turn, another document, forged messages) raises a
``P2PError`` and is never merged.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import pytest
from pycrdt import Doc, Text, create_sync_message, create_update_message

from p2prtc.core.framing import Chunker, Frame, FrameKind, encode_frame
from p2prtc.core.keys import SealedChannel, TamperedMessage, session_channel
from p2prtc.core.pipesync import MAX_STEP1_BYTES, PipeSync, PipeSyncError, PipeSyncState
from p2prtc.core.sync import PeerSync, RemoteUpdate, Send, apply_sync_message

DOC_ID = b"\x07" * 16
SMALL_CHUNK = 1024  # many chunks for a state of a few KB: chunking is exercised


def channels() -> tuple[SealedChannel, SealedChannel]:
    """Both ends of a member handshake's sealed channel."""
    key, salt = os.urandom(32), os.urandom(32)
    return (
        session_channel(key, salt, "member", initiator=True),
        session_channel(key, salt, "member", initiator=False),
    )


def text_doc(content: str, client_id: int) -> Doc[Any]:
    doc: Doc[Any] = Doc(client_id=client_id)
    doc["text"] = Text(content)
    return doc


def text_of(doc: Doc[Any]) -> str:
    return str(doc.get("text", type=Text))


def machines(
    doc_a: Doc[Any] | None, doc_b: Doc[Any] | None, **options: Any
) -> tuple[PipeSync, PipeSync]:
    channel_a, channel_b = channels()
    options.setdefault("max_chunk", SMALL_CHUNK)
    return PipeSync(DOC_ID, doc_a, channel_a, **options), PipeSync(
        DOC_ID, doc_b, channel_b, **options
    )


def run(a: PipeSync, b: PipeSync) -> int:
    """Deliver each side's messages to the other, one at a time, interleaved, until both
    are done; the number of messages that crossed."""
    to_b, to_a = list(a.start()), list(b.start())
    crossed = 0
    while to_a or to_b:
        if to_b:
            to_a += b.receive(to_b.pop(0))
            crossed += 1
        if to_a:
            to_b += a.receive(to_a.pop(0))
            crossed += 1
    assert a.done and b.done
    return crossed


def merge(doc: Doc[Any], state: bytes) -> list[bytes]:
    """Merge a received state as the daemon does (``Syncing.on_first_state``): the updates
    it made, to persist and relay."""
    return apply_sync_message(state, doc)


def test_a_joiner_gets_the_members_state_and_merges_it_like_a_sync_step() -> None:
    content = "x" * 20_000  # about 20 chunks of 1 KB
    member, joiner = text_doc(content, 1), Doc(client_id=2)
    a, b = machines(member, joiner)
    assert run(a, b) > 20
    assert b.received is not None and a.received is not None
    (update,) = merge(joiner, b.received)
    assert text_of(joiner) == content
    # The update the daemon persists and relays is the one a SyncStep2 that came over the
    # data channel gives.
    over_channel, member_link = PeerSync("member"), PeerSync("joiner")
    step1 = over_channel.add_doc(DOC_ID, Doc(client_id=3))
    member_link.add_doc(DOC_ID, member)
    (reply,) = [e for m in step1 for e in member_link.receive(m) if isinstance(e, Send)]
    (event, *_) = [e for m in reply.messages for e in over_channel.receive(m)]
    assert isinstance(event, RemoteUpdate) and event.update == update
    # The member merges the joiner's (empty) state: nothing changes, nothing to persist.
    assert merge(member, a.received) == []


def test_after_the_pipe_the_links_sync_step_finds_nothing_to_send_again() -> None:
    """The SyncStep1 the link sends once the pipe's state is merged asks only for what
    changed since."""
    member, joiner = text_doc("y" * 5000, 1), Doc(client_id=2)
    a, b = machines(member, joiner)
    run(a, b)
    assert b.received is not None
    merge(joiner, b.received)
    step1 = PeerSync("member").add_doc(DOC_ID, joiner)
    member_link = PeerSync("joiner")
    member_link.add_doc(DOC_ID, member)
    answers = [e for m in step1 for e in member_link.receive(m) if isinstance(e, Send)]
    assert sum(len(m) for e in answers for m in e.messages) < 100  # no second copy of the doc


def test_both_sides_edits_cross_and_merge() -> None:
    """Two members that each have edits the other lacks: each gets the other's."""
    base = text_doc("shared", 1)
    other: Doc[Any] = Doc(client_id=2)
    other.apply_update(base.get_update())
    with base.transaction():
        base.get("text", type=Text).insert(0, "A:")
    with other.transaction():
        other.get("text", type=Text).insert(6, ":B")
    a, b = machines(base, other)
    run(a, b)
    assert a.received is not None and b.received is not None
    merge(base, a.received)
    merge(other, b.received)
    assert text_of(base) == text_of(other) == "A:shared:B"


def test_a_side_that_does_not_sync_with_the_peer_sends_no_state_and_gets_none() -> None:
    for refused_by_a in (True, False):
        member = text_doc("secret notes", 1)
        a, b = machines(
            None if refused_by_a else member, Doc(client_id=2) if refused_by_a else None
        )
        assert run(a, b) == 2  # one frame each: a SyncStep1 and a LEAVE, nothing more
        assert a.received is None and b.received is None


def test_progress_tells_how_far_the_state_has_come() -> None:
    a, b = machines(text_doc("z" * 10_000, 1), Doc(client_id=2))
    to_b = list(a.start())
    to_a = list(b.start())
    for message in to_a:
        to_b += a.receive(message)
    b.receive(to_b.pop(0))  # the member's SyncStep1
    b.receive(to_b.pop(0))  # the first chunk of its state
    progress = b.progress
    assert progress is not None and progress.doc_id == DOC_ID
    assert 0 < progress.received < progress.expected
    for message in to_b:
        b.receive(message)
    assert b.done and b.progress is None


def sealed(
    channel: SealedChannel, frames: Iterable[Frame], max_chunk: int = SMALL_CHUNK
) -> list[bytes]:
    chunker = Chunker(max_chunk)
    return [channel.seal(c) for f in frames for c in chunker.split(encode_frame(f))]


def step1_frame(doc: Doc[Any]) -> Frame:
    return Frame(FrameKind.SYNC, DOC_ID, create_sync_message(doc))


def hostile_peer(**options: Any) -> tuple[PipeSync, SealedChannel]:
    """Our machine (a joiner, empty doc) and the sealing end a hostile peer holds."""
    ours, theirs = channels()
    options.setdefault("max_chunk", SMALL_CHUNK)
    return PipeSync(DOC_ID, Doc(client_id=2), ours, **options), theirs


def feed(machine: PipeSync, messages: list[bytes]) -> None:
    machine.start()
    for message in messages:
        list(machine.receive(message))


def test_a_state_over_the_bound_is_refused_as_its_chunks_arrive() -> None:
    machine, theirs = hostile_peer(max_state_bytes=8192)
    huge = Frame(FrameKind.SYNC, DOC_ID, b"\0" * 100_000)
    messages = sealed(theirs, [step1_frame(Doc()), huge])
    with pytest.raises(PipeSyncError, match="over 8192 bytes"):
        feed(machine, messages)
    assert machine.state is PipeSyncState.FAILED
    with pytest.raises(PipeSyncError):  # and nothing more is taken
        list(machine.receive(messages[-1]))


def test_a_state_vector_over_its_bound_is_refused() -> None:
    machine, theirs = hostile_peer()
    messages = sealed(theirs, [Frame(FrameKind.SYNC, DOC_ID, b"\0" * (MAX_STEP1_BYTES + 1))])
    with pytest.raises(PipeSyncError):
        feed(machine, messages)


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([Frame(FrameKind.SYNC, b"\x01" * 16, create_sync_message(Doc()))], "SYNC frame"),
        ([Frame(FrameKind.AUTH, DOC_ID, b"hello")], "AUTH frame"),
        ([Frame(FrameKind.ERROR, b"", b"boom")], "ERROR frame"),
        ([Frame(FrameKind.SYNC, DOC_ID, create_update_message(b"\0\0"))], "expected a SYNC_STEP1"),
        ([Frame(FrameKind.SYNC, DOC_ID, b"\0\0\x05ab")], "announces 5 bytes"),
        (
            [Frame(FrameKind.SYNC, DOC_ID, create_sync_message(Doc()))] * 2,
            "expected a SYNC_STEP2",
        ),
        (
            [
                Frame(FrameKind.SYNC, DOC_ID, create_sync_message(Doc())),
                Frame(FrameKind.LEAVE, DOC_ID, b""),
            ],
            "expected a SYNC_STEP2, got a LEAVE",
        ),
        ([Frame(FrameKind.SYNC, DOC_ID, b"\0\0\x03\xff\xff\xff")], "bad SyncStep1"),
    ],
)
def test_frames_out_of_turn_or_for_another_doc_are_refused(
    frames: list[Frame], reason: str
) -> None:
    machine, theirs = hostile_peer()
    with pytest.raises(PipeSyncError, match=reason):
        feed(machine, sealed(theirs, frames))


def test_a_message_after_the_round_is_refused() -> None:
    member, joiner = text_doc("done", 1), Doc(client_id=2)
    a, b = machines(member, joiner)
    run(a, b)
    with pytest.raises(PipeSyncError, match="after the first sync round"):
        list(b.receive(b"more"))


def test_a_forged_or_replayed_message_is_refused() -> None:
    machine, theirs = hostile_peer()
    message = sealed(theirs, [step1_frame(Doc())])[0]
    machine.start()
    with pytest.raises(TamperedMessage):
        list(machine.receive(message[:-1] + bytes([message[-1] ^ 1])))
    assert machine.state is PipeSyncState.FAILED


def test_a_broken_state_is_refused_when_merged_and_changes_nothing() -> None:
    """A SyncStep2 whose update pycrdt cannot read passes the pipe's checks (well-formed
    y-sync) and is refused when merged (the daemon then ends the rendezvous)."""
    machine, theirs = hostile_peer()
    garbage = b"\0\x01\x04\xff\xff\xff\xff"
    feed(machine, sealed(theirs, [step1_frame(Doc()), Frame(FrameKind.SYNC, DOC_ID, garbage)]))
    assert machine.received == garbage
    doc: Doc[Any] = Doc()
    with pytest.raises(ValueError):
        merge(doc, garbage)
    assert doc.get_update() == b"\x00\x00"  # nothing merged
