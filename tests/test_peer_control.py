"""The control frames of one connection (daemon/peer_control.py), without a link: a real
y-sync session says which shares the two hold in common; the daemon's handlers record."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from pycrdt import Doc

from p2prtc.core.framing import Frame, FrameKind
from p2prtc.core.handshake import share_lookup
from p2prtc.core.sync import PeerSync
from p2prtc.daemon.peer_control import PeerControl

HELD = b"h" * 16  # a share the two hold in common
LEFT = b"l" * 16  # one they do not (left, or never held)
PEER = "peer-id/run-id/awareness"


@dataclass
class Daemon:
    """What the daemon sees of one connection's control frames."""

    sent: list[Frame] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    rekeys: list[tuple[bytes, bytes]] = field(default_factory=list)
    awareness: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def send_frames(self, frames: list[Frame]) -> None:
        self.sent += frames

    async def fail(self, reason: str) -> None:
        self.failures.append(reason)

    async def on_rekey(self, share_id: bytes, payload: bytes) -> None:
        self.rekeys.append((share_id, payload))

    async def on_awareness(self, share_id: bytes, payload: bytes) -> None:
        self.awareness.append((share_id, payload))

    async def on_share(self, share_id: bytes, secret: bytes) -> None:
        raise AssertionError("no AUTH handshake runs in these tests")


def control(daemon: Daemon, features: frozenset[str] = frozenset({"awareness"})) -> PeerControl:
    sync = PeerSync("peer")
    sync.add_doc(HELD, Doc())
    return PeerControl(
        sync,
        PEER,
        features,
        label="peer",
        identity="me/run",
        lookup=share_lookup({}),
        binding=b"fingerprints",
        send_frames=daemon.send_frames,
        fail=daemon.fail,
        on_share=daemon.on_share,
        on_rekey=daemon.on_rekey,
        on_awareness=daemon.on_awareness,
    )


@pytest.mark.parametrize("kind", [FrameKind.REKEY, FrameKind.AWARENESS])
async def test_a_shares_frame_counts_only_for_a_share_held_in_common(kind: FrameKind) -> None:
    daemon = Daemon()
    peer = control(daemon)
    await peer.receive(Frame(kind, LEFT, b"crossed a LEAVE on the wire"))
    await peer.receive(Frame(kind, HELD, b"payload"))
    handled = {FrameKind.REKEY: daemon.rekeys, FrameKind.AWARENESS: daemon.awareness}
    assert handled == {
        FrameKind.REKEY: [(HELD, b"payload")] if kind is FrameKind.REKEY else [],
        FrameKind.AWARENESS: [(HELD, b"payload")] if kind is FrameKind.AWARENESS else [],
    }
    assert daemon.failures == []


async def test_a_frame_of_another_kind_disconnects_the_peer() -> None:
    daemon = Daemon()
    await control(daemon).receive(Frame(FrameKind.SYNC, HELD, b""))
    assert daemon.failures == ["unexpected SYNC frame"]


async def test_rekeys_go_only_to_members_holding_the_share() -> None:
    daemon = Daemon()
    peer = control(daemon)
    await peer.send_rekey(LEFT, b"secret")
    await peer.send_rekey(HELD, b"secret")
    assert daemon.sent == [Frame(FrameKind.REKEY, HELD, b"secret")]


async def test_awareness_goes_only_to_peers_that_show_it() -> None:
    daemon, old = Daemon(), Daemon()
    await control(daemon).send_awareness(HELD, b"cursor")
    await control(old, features=frozenset()).send_awareness(HELD, b"cursor")
    assert daemon.sent == [Frame(FrameKind.AWARENESS, HELD, b"cursor")]
    assert old.sent == []


async def test_a_share_held_in_common_is_not_authenticated_again() -> None:
    daemon = Daemon()
    peer = control(daemon)
    await peer.authenticate_share(HELD, b"secret")
    assert daemon.sent == []
    await peer.authenticate_share(LEFT, b"secret")
    assert [frame.kind for frame in daemon.sent] == [FrameKind.AUTH]
