"""What a relay makes of Redis's pub/sub messages (signaling/cluster_wire.py), without Redis:
another relay's publish is delivered, its own and other programs' are not."""

from __future__ import annotations

import pytest

from signaling import cluster_wire

ME, OTHER = "1111", "2222"
MESSAGE = '{"type":"publish","topic":"room","data":{}}'


def from_redis(kind: str, channel: str | bytes, data: str | bytes = b"") -> dict[str, object]:
    """A message as redis-py's PubSub.get_message returns it (bytes by default)."""
    return {"type": kind, "pattern": None, "channel": channel, "data": data}


def test_another_relays_publish_reaches_the_subscribers_of_its_topic() -> None:
    channel = cluster_wire.channel("room")
    body = cluster_wire.body(OTHER, MESSAGE).encode()
    assert cluster_wire.read(from_redis("message", channel.encode(), body), ME) == (
        cluster_wire.Remote("room", MESSAGE)
    )


def test_a_relays_own_publish_comes_back_to_nobody() -> None:
    message = from_redis("message", cluster_wire.channel("room"), cluster_wire.body(ME, MESSAGE))
    assert cluster_wire.read(message, ME) is None


@pytest.mark.parametrize("data", [b"2222 not json", b"no-space", "2222 {unclosed", b"\xff\xfe"])
def test_what_another_program_puts_on_a_relay_channel_is_refused(data: bytes | str) -> None:
    message = from_redis("message", cluster_wire.channel("room"), data)
    assert cluster_wire.read(message, ME) == cluster_wire.Foreign()


def test_other_channels_and_kinds_are_ignored_and_subscribes_confirmed() -> None:
    other = from_redis("message", b"someone-else:room", cluster_wire.body(OTHER, MESSAGE))
    assert cluster_wire.read(other, ME) is None
    assert cluster_wire.read(from_redis("pong", b"", b"PONG"), ME) is None
    confirmation = from_redis("subscribe", cluster_wire.channel("room").encode(), b"1")
    assert cluster_wire.read(confirmation, ME) == cluster_wire.Confirmed("p2prtc-signal:room")
