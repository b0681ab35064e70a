"""Counters the relay exposes on its health endpoint and logs at shutdown."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class Counters:
    """Totals since start; never decreases (the gauges live in the server)."""

    connections_accepted: int = 0
    connections_rejected: int = 0
    """Refused at the per-address or total connection limit."""
    messages_received: int = 0
    bytes_received: int = 0
    publishes: int = 0
    publishes_unrouted: int = 0
    """Publishes to a topic nobody subscribed to."""
    deliveries: int = 0
    """Messages relayed to a subscriber (one publish reaches many)."""
    malformed: int = 0
    unknown_type: int = 0
    rate_limited: int = 0
    """Messages dropped because their connection sent too fast."""
    subscriptions_refused: int = 0
    closed_oversized: int = 0
    closed_idle: int = 0
    closed_slow: int = 0
    """Receivers dropped because their unsent backlog exceeded the limit."""

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)
