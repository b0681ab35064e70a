"""Reconnect delays: exponential with jitter, so a restarted server is not stampeded (sans-IO).

Used by the relays' Redis link (signaling/cluster.py) and by p2prtc's signaling client,
which imports it from here as it imports `signaling.limits` (signaling/ imports nothing
from p2prtc).
"""

from __future__ import annotations

import random


class Backoff:
    """Delays doubling from ``minimum`` up to ``maximum``, each drawn in [d/2, d]."""

    def __init__(self, minimum: float, maximum: float, rng: random.Random | None = None) -> None:
        """``rng``: the source of the jitter (a fresh, OS-seeded one by default)."""
        self._minimum = minimum
        self._maximum = maximum
        self._next = minimum
        self._rng = rng if rng is not None else random.Random()

    def reset(self) -> None:
        """The connection worked: the next failure waits the minimum again."""
        self._next = self._minimum

    def next_delay(self) -> float:
        """The delay before the next attempt: in [d/2, d], d doubling up to the maximum."""
        delay = self._next
        self._next = min(self._maximum, self._next * 2)
        return self._rng.uniform(delay / 2, delay)
