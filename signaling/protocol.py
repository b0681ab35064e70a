"""The y-webrtc signaling protocol: JSON objects with a `type` over WebSocket.

Client to server: `subscribe {topics}`, `unsubscribe {topics}`, `publish {topic, ...}`,
`ping`. Server to client: the relayed `publish` (with `clients`, the number of
subscribers it was sent to, as the y-webrtc server does), `pong`, and, added here,
`error {error, detail?, topics?}` for refused input (y-webrtc clients ignore it).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any


class ErrorCode(enum.Enum):
    """The `error` field of an error message."""

    MALFORMED = "malformed"
    UNKNOWN_TYPE = "unknown-type"
    RATE_LIMITED = "rate-limited"
    TOO_MANY_TOPICS = "too-many-topics"
    TOPIC_FULL = "topic-full"
    TOPIC_TOO_LONG = "topic-too-long"


class ProtocolError(Exception):
    """A message the relay cannot act on."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Subscribe:
    topics: tuple[str, ...]


@dataclass(frozen=True)
class Unsubscribe:
    topics: tuple[str, ...]


@dataclass(frozen=True)
class Publish:
    topic: str
    message: dict[str, Any]
    """The whole message as received; it is relayed unchanged apart from `clients`."""


@dataclass(frozen=True)
class Ping:
    pass


ClientMessage = Subscribe | Unsubscribe | Publish | Ping

PONG = json.dumps({"type": "pong"})


def _reject_constant(name: str) -> None:
    # NaN and Infinity are not JSON: relaying them would break browsers' JSON.parse.
    raise ValueError(f"{name} is not valid JSON")


def _decode_object(raw: str | bytes) -> dict[str, Any]:
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        # RecursionError: deeply nested arrays must not take the connection down.
        raise ProtocolError(ErrorCode.MALFORMED, "not valid JSON") from exc
    if not isinstance(value, dict):
        raise ProtocolError(ErrorCode.MALFORMED, "not a JSON object")
    return value


def _topic_list(message: dict[str, Any]) -> tuple[str, ...]:
    topics = message.get("topics", [])
    if not isinstance(topics, list):
        raise ProtocolError(ErrorCode.MALFORMED, "topics must be a list")
    # Like y-webrtc, entries that are not strings are skipped, not fatal.
    return tuple(topic for topic in topics if isinstance(topic, str))


def parse_message(raw: str | bytes) -> ClientMessage:
    """Turn one WebSocket message into a client message, or raise ProtocolError."""
    message = _decode_object(raw)
    kind = message.get("type")
    if kind == "subscribe":
        return Subscribe(_topic_list(message))
    if kind == "unsubscribe":
        return Unsubscribe(_topic_list(message))
    if kind == "publish":
        topic = message.get("topic")
        if not isinstance(topic, str) or not topic:
            raise ProtocolError(ErrorCode.MALFORMED, "publish needs a topic")
        return Publish(topic, message)
    if kind == "ping":
        return Ping()
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.MALFORMED, "missing type")
    raise ProtocolError(ErrorCode.UNKNOWN_TYPE, "unknown type")


def publish_body(publish: Publish) -> str:
    """The sender's message as relayed, without the receiver count (see `with_clients`)."""
    message = {key: value for key, value in publish.message.items() if key != "clients"}
    return json.dumps(message, separators=(",", ":"))


def with_clients(body: str, clients: int) -> str:
    """A `publish_body` with `clients` added last; the body is never parsed again."""
    # The body is a JSON object with at least `type` and `topic`: it ends with "}".
    return f'{body[:-1]},"clients":{clients}}}'


def encode_error(code: ErrorCode, detail: str, topics: tuple[str, ...] = ()) -> str:
    """An error message; `topics` names the topics a subscribe refused."""
    message: dict[str, Any] = {"type": "error", "error": code.value, "detail": detail}
    if topics:
        message["topics"] = list(topics)
    return json.dumps(message, separators=(",", ":"))
