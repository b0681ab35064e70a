"""A token bucket (sans-IO): at most ``rate`` events per second on average, ``burst`` at once.

Used for what may be dropped when it comes too fast, such as awareness updates (cursors,
names): the next one carries the whole state of its sender again.
"""

from __future__ import annotations


class TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last: float | None = None

    def allow(self, now: float) -> bool:
        """Whether one more event may pass at time ``now`` (seconds, monotonic)."""
        if self._last is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
