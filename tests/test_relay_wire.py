"""The signaling client's messages (core/relay_wire.py) and its reconnect delays
(signaling/backoff.py), without a relay: what a hostile relay may send is skipped."""

from __future__ import annotations

import json
import random

import pytest

from p2prtc.core import relay_wire
from signaling.backoff import Backoff

ME, OTHER = "aaaa", "bbbb"
HELD = {"room"}.__contains__


def test_a_publish_round_trips_to_another_client_holding_the_topic() -> None:
    text = relay_wire.publish("room", b"\x00sealed\xff", OTHER)
    assert relay_wire.decode(text, ME, HELD) == relay_wire.Published("room", b"\x00sealed\xff")


def test_our_own_echo_and_topics_we_do_not_hold_are_skipped() -> None:
    assert relay_wire.decode(relay_wire.publish("room", b"x", ME), ME, HELD) is None
    assert relay_wire.decode(relay_wire.publish("other", b"x", OTHER), ME, HELD) is None


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1, 2]",
        "[" * 100_000,
        json.dumps({"type": "publish", "topic": "room", "data": "text"}),
        json.dumps({"type": "publish", "topic": "room", "data": {"from": OTHER}}),
        json.dumps({"type": "publish", "topic": "room", "data": {"p2prtc": 5}}),
        json.dumps({"type": "publish", "topic": "room", "data": {"p2prtc": "not base64!"}}),
        json.dumps({"type": "publish", "topic": "room", "data": {"yjs": "other app"}}),
        json.dumps({"type": "announce"}),
    ],
)
def test_what_is_not_a_message_for_us_is_skipped(raw: str) -> None:
    assert relay_wire.decode(raw, ME, HELD) is None


def test_pongs_and_refusals_are_told_apart() -> None:
    assert relay_wire.decode(json.dumps({"type": "pong"}), ME, HELD) == relay_wire.Pong()
    refusal = json.dumps({"type": "error", "error": "rate-limited"})
    assert relay_wire.decode(refusal, ME, HELD) == relay_wire.Refused("rate-limited")


def test_requests_are_y_webrtc_messages() -> None:
    assert json.loads(relay_wire.subscribe(["a", "b"])) == {
        "type": "subscribe",
        "topics": ["a", "b"],
    }
    assert json.loads(relay_wire.unsubscribe(["a"])) == {"type": "unsubscribe", "topics": ["a"]}
    assert json.loads(relay_wire.PING) == {"type": "ping"}


def test_a_seeded_backoff_replays_exactly() -> None:
    first = Backoff(0.1, 5.0, random.Random(7))
    second = Backoff(0.1, 5.0, random.Random(7))
    delays = [first.next_delay() for _ in range(8)]
    assert delays == [second.next_delay() for _ in range(8)]
    assert delays[-1] >= 2.5  # doubled up to the maximum
