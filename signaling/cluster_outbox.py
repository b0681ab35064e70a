"""The relay's publishes on their way to Redis: bounded, sent in pipelined batches, counted."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

# Publishes per pipeline round trip; more wait in the queue meanwhile.
_PUBLISH_BATCH = 512


class Outbox:
    """Queues (channel, data) publishes and sends them over one Redis connection.

    ``counters`` is the link's: ``published`` counts what Redis took, ``dropped`` what never
    left (queue full, link lost)."""

    def __init__(self, max_queued: int, counters: dict[str, int]) -> None:
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(max_queued)
        self._counters = counters

    def put(self, channel: str, data: str) -> None:
        """Queue a publish without waiting; dropped when the queue is full."""
        if self._queue.full():
            self._counters["dropped"] += 1
            return
        self._queue.put_nowait((channel, data))

    def drop_all(self) -> None:
        """The connection is gone: what waits is dropped (the link says it is degraded)."""
        while not self._queue.empty():
            self._queue.get_nowait()
            self._counters["dropped"] += 1

    async def send_to(self, publisher: Redis) -> None:
        """Send what is queued, batch after batch, until the connection fails."""
        while True:
            batch = [await self._queue.get()]
            while len(batch) < _PUBLISH_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            pipeline = publisher.pipeline(transaction=False)
            for channel, data in batch:
                pipeline.publish(channel, data)
            try:
                await pipeline.execute()
            except BaseException:
                self._counters["dropped"] += len(batch)
                raise
            self._counters["published"] += len(batch)
