"""What p2prtc's signaling client sends to a y-webrtc relay, and what it reads back (sans-IO).

Requests are y-webrtc's `subscribe`, `unsubscribe` and `ping` (JSON text). The daemon's
bytes (already sealed) travel as a y-webrtc `publish` whose `data` is
`{"p2prtc": <base64>, "from": <sender>}`: `from` is a random id per client, so a client
drops its own echoes (the relay sends a publish to every subscriber, the sender included).
Anything else published on a topic (other y-webrtc apps, garbage) is skipped.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PING = json.dumps({"type": "ping"})


@dataclass(frozen=True)
class Pong:
    """The relay's answer to the oldest unanswered ping (it answers in order)."""


@dataclass(frozen=True)
class Refused:
    """The relay refused one of our messages (rate limit, size, topic limits)."""

    error: Any


@dataclass(frozen=True)
class Published:
    """Another client's p2prtc message on a topic we hold."""

    topic: str
    payload: bytes


Received = Pong | Refused | Published


def subscribe(topics: list[str]) -> str:
    return json.dumps({"type": "subscribe", "topics": topics})


def unsubscribe(topics: list[str]) -> str:
    return json.dumps({"type": "unsubscribe", "topics": topics})


def publish(topic: str, data: bytes, sender: str) -> str:
    blob = base64.b64encode(data).decode("ascii")
    return json.dumps({"type": "publish", "topic": topic, "data": {"p2prtc": blob, "from": sender}})


def decode(raw: str | bytes, sender: str, holds: Callable[[str], bool]) -> Received | None:
    """What the relay sent, for the client of id ``sender`` holding the topics ``holds``
    accepts; None for anything else (not JSON, other types, others' or our own messages)."""
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(message, dict):
        return None
    kind = message.get("type")
    if kind == "pong":
        return Pong()
    if kind == "error":
        return Refused(message.get("error"))
    if kind == "publish":
        return _decode_publish(message, sender, holds)
    return None


def _decode_publish(
    message: dict[str, Any], sender: str, holds: Callable[[str], bool]
) -> Published | None:
    topic: Any = message.get("topic")  # any JSON: ``holds`` decides (a set lookup)
    data = message.get("data")
    if not holds(topic) or not isinstance(data, dict):
        return None
    blob = data.get("p2prtc")
    if data.get("from") == sender or not isinstance(blob, str):
        return None
    try:
        return Published(topic, base64.b64decode(blob, validate=True))
    except (binascii.Error, ValueError):
        return None
