"""Which connection listens to which topic, within the topic limits (sans-IO)."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from signaling.protocol import ErrorCode

C = TypeVar("C", bound=Hashable)


class TopicTable(Generic[C]):
    """Two-way map topic <-> subscribers; a topic exists only while it has subscribers."""

    def __init__(
        self, max_topics_per_connection: int, max_subscribers_per_topic: int, max_topic_length: int
    ) -> None:
        self._max_topics = max_topics_per_connection
        self._max_subscribers = max_subscribers_per_topic
        self._max_topic_length = max_topic_length
        self._subscribers: dict[str, set[C]] = {}
        self._topics_of: dict[C, set[str]] = {}

    @property
    def topic_count(self) -> int:
        return len(self._subscribers)

    @property
    def subscription_count(self) -> int:
        return sum(len(topics) for topics in self._topics_of.values())

    def __contains__(self, topic: str) -> bool:
        return topic in self._subscribers

    def topics(self) -> list[str]:
        """Every topic that has subscribers."""
        return list(self._subscribers)

    def subscribe(self, connection: C, topic: str) -> ErrorCode | None:
        """Add `connection` to `topic`; returns why it was refused, or None when done."""
        mine = self._topics_of.get(connection, set())
        if topic in mine:
            return None
        if len(topic) > self._max_topic_length:
            return ErrorCode.TOPIC_TOO_LONG
        if len(mine) >= self._max_topics:
            return ErrorCode.TOO_MANY_TOPICS
        subscribers = self._subscribers.get(topic, set())
        if len(subscribers) >= self._max_subscribers:
            return ErrorCode.TOPIC_FULL
        subscribers.add(connection)
        mine.add(topic)
        self._subscribers[topic] = subscribers
        self._topics_of[connection] = mine
        return None

    def unsubscribe(self, connection: C, topic: str) -> bool:
        """Remove `connection` from `topic`, freeing whatever becomes empty.

        Returns True when the topic was freed (its last subscriber left).
        """
        subscribers = self._subscribers.get(topic)
        if subscribers is None or connection not in subscribers:
            return False
        subscribers.remove(connection)
        mine = self._topics_of[connection]
        mine.remove(topic)
        if not mine:
            del self._topics_of[connection]
        if subscribers:
            return False
        del self._subscribers[topic]
        return True

    def remove(self, connection: C) -> list[str]:
        """Forget a closed connection entirely; returns the topics that were freed."""
        topics = tuple(self._topics_of.get(connection, ()))
        return [topic for topic in topics if self.unsubscribe(connection, topic)]

    def subscribers(self, topic: str) -> tuple[C, ...]:
        """A snapshot of the topic's subscribers, safe to use while the table changes."""
        return tuple(self._subscribers.get(topic, ()))
