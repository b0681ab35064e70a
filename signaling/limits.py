"""Resource limits of the signaling relay and the small sans-IO helpers that enforce them.

Everything here is pure: callers pass the current time in, so the helpers are tested
without clocks or sockets.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TypeVar

N = TypeVar("N", int, float)


def _limit(default: N, help_text: str) -> Any:
    """A Limits field: its help text is shown by `p2prtc-signal --help` and the docs."""
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class Limits:
    """Every limit the relay enforces; the defaults suit a small public server."""

    max_message_bytes: int = _limit(
        64 * 1024, "Largest accepted WebSocket message; bigger ones close the connection (1009)."
    )
    max_topics_per_connection: int = _limit(
        256, "Topics one connection may subscribe to at the same time."
    )
    max_subscribers_per_topic: int = _limit(
        256, "Connections that may subscribe to one topic at the same time."
    )
    max_topic_length: int = _limit(256, "Longest accepted topic name, in characters.")
    messages_per_second: float = _limit(
        50.0, "Sustained rate of messages one connection may send; excess messages are dropped."
    )
    message_burst: int = _limit(
        200, "Messages one connection may send at once before the rate applies."
    )
    max_connections_per_address: int = _limit(32, "Open connections from one client address.")
    max_connections: int = _limit(10_000, "Open connections in total.")
    max_send_buffer_bytes: int = _limit(
        1024 * 1024, "Unsent bytes queued for one receiver before it is dropped as too slow."
    )
    idle_timeout: float = _limit(
        300.0, "Seconds without any message to or from a connection before it is closed."
    )
    ping_interval: float = _limit(20.0, "Seconds between WebSocket pings that detect dead peers.")
    ping_timeout: float = _limit(
        20.0, "Seconds a peer has to answer a ping before it is considered dead."
    )

    def __post_init__(self) -> None:
        for limit in dataclasses.fields(self):
            if getattr(self, limit.name) <= 0:
                raise ValueError(f"{limit.name} must be positive")

    def as_dict(self) -> dict[str, float]:
        """The limits as plain numbers, for the health endpoint."""
        return {limit.name: getattr(self, limit.name) for limit in dataclasses.fields(self)}


class TokenBucket:
    """Allows `rate` events per second on average and `burst` events at once."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._updated = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; False means the event is over the limit."""
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._updated = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class ConnectionSlots:
    """Counts open connections per client address and in total, within their limits."""

    def __init__(self, per_address: int, total: int) -> None:
        self._per_address = per_address
        self._total = total
        self._by_address: Counter[str] = Counter()
        self._open = 0

    @property
    def open(self) -> int:
        """Connections holding a slot."""
        return self._open

    def acquire(self, address: str) -> bool:
        """Take a slot for a new connection from `address`; False when a limit is reached."""
        if self.open >= self._total or self._by_address[address] >= self._per_address:
            return False
        self._by_address[address] += 1
        self._open += 1
        return True

    def release(self, address: str) -> None:
        """Give back the slot of a closed connection; addresses with no slot are forgotten."""
        self._by_address[address] -= 1
        self._open -= 1
        if self._by_address[address] <= 0:
            del self._by_address[address]
