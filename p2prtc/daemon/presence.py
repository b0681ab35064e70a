"""Which presence announcements on signaling topics a daemon answers (sans-IO: no clock).

Used by p2prtc/daemon/signal_pipes.py; the time is passed in, so the bounds are tested
without a loop or a relay (tests/test_presence.py).
"""

from __future__ import annotations

from signaling.limits import TokenBucket


class PresenceReplies:
    """Which presence announcements to answer: a bounded number, whoever sends them (sans-IO).

    Anyone who knows a topic can announce on it as fast as the relay allows, and an
    invitation's topic comes from a short nameplate. Answering every announcement would
    push this daemon over the relay's rate limit: the relay then drops our pings too, we
    reconnect in a loop and members' messages are lost. So each instance is answered once
    per `repeat_after` seconds (the copies of one announcement through several relays, or
    a joiner's retries, get one answer), each topic within its own token bucket (a flood
    on one invitation topic uses up only that topic's answers) and all topics within a
    total well under the relay's 50/s default.
    """

    def __init__(
        self,
        *,
        per_topic_rate: float = 1.0,
        per_topic_burst: int = 8,
        total_rate: float = 10.0,
        total_burst: int = 30,
        repeat_after: float = 5.0,
        remembered: int = 4096,
    ) -> None:
        self._per_topic = (per_topic_rate, per_topic_burst)
        self._topics: dict[str, TokenBucket] = {}
        self._total: TokenBucket | None = None
        self._total_limits = (total_rate, total_burst)
        self._repeat_after = repeat_after
        self._remembered = remembered
        self._answered: dict[tuple[str, str], float] = {}  # oldest first
        self.refused = 0

    def allow(self, topic: str, peer: str, now: float) -> bool:
        """Whether to answer `peer`'s announcement on `topic` now; counts it if so."""
        last = self._answered.get((topic, peer))
        if last is not None and now - last < self._repeat_after:
            return False  # already answered (and the same announcement via a second relay)
        if self._total is None:
            self._total = TokenBucket(*self._total_limits, now)
        bucket = self._topics.setdefault(topic, TokenBucket(*self._per_topic, now))
        if not (bucket.take(now) and self._total.take(now)):
            self.refused += 1
            return False
        self._remember(topic, peer, now)
        return True

    def forget_topics_except(self, topics: set[str]) -> None:
        """Drop the buckets of topics we no longer listen on."""
        for topic in set(self._topics) - topics:
            del self._topics[topic]

    def _remember(self, topic: str, peer: str, now: float) -> None:
        self._answered.pop((topic, peer), None)
        self._answered[(topic, peer)] = now
        while len(self._answered) > self._remembered:
            del self._answered[next(iter(self._answered))]
