"""The relays' messages in Redis: one channel per topic, `<relay id> <message>` bodies (sans-IO).

A relay publishes a client's publish on channel `p2prtc-signal:<topic>` as
`<relay id> <message>`. What Redis hands a relay is a subscription's confirmation, another
relay's publish, its own (delivered to its clients already) or something another program
put on a relay channel (never passed on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CHANNEL_PREFIX = "p2prtc-signal:"


@dataclass(frozen=True)
class Confirmed:
    """Redis registered one SUBSCRIBE of this channel."""

    channel: str


@dataclass(frozen=True)
class Remote:
    """Another relay's publish, for this relay's subscribers of ``topic``."""

    topic: str
    body: str


@dataclass(frozen=True)
class Foreign:
    """On a relay channel, but not a relay's message: refused."""


FromRedis = Confirmed | Remote | Foreign


def channel(topic: str) -> str:
    return CHANNEL_PREFIX + topic


def body(relay_id: str, message: str) -> str:
    """What relay ``relay_id`` publishes in Redis for a client's ``message``."""
    return f"{relay_id} {message}"


def read(message: dict[str, Any], relay_id: str) -> FromRedis | None:
    """What a pub/sub message from Redis means to relay ``relay_id``; None: nothing to do."""
    kind, name = message["type"], _text(message["channel"])
    if kind == "subscribe":
        return Confirmed(name)
    if kind != "message" or not name.startswith(CHANNEL_PREFIX):
        return None
    origin, _, relayed = _text(message["data"]).partition(" ")
    if origin == relay_id:
        return None  # delivered to our own clients already
    if not (relayed.startswith("{") and relayed.endswith("}")):
        return Foreign()  # another program on the same Redis: never pass it on
    return Remote(name.removeprefix(CHANNEL_PREFIX), relayed)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
