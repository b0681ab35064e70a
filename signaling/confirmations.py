"""Waiters for Redis's confirmations of SUBSCRIBE: one per channel subscribed, in order."""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque


class Confirmations:
    """The futures of the subscribes Redis has not confirmed yet, FIFO per channel."""

    def __init__(self) -> None:
        self._waiters: defaultdict[str, deque[asyncio.Future[None]]] = defaultdict(deque)

    def expect(self, channel: str) -> asyncio.Future[None]:
        """A future resolved by the next confirmation of ``channel``."""
        future = asyncio.get_running_loop().create_future()
        self._waiters[channel].append(future)
        return future

    def confirmed(self, channel: str) -> None:
        waiters = self._waiters.get(channel)
        if waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
            if not waiters:
                del self._waiters[channel]

    def cancel_all(self) -> None:
        """The connection is gone: no confirmation will come."""
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.cancel()
        self._waiters.clear()
