"""The outbox of one peer connection: messages sent in order by one task, bounded in bytes.

Queuing never waits for the peer; the sender task waits on the data channel's buffer. What
may wait is bounded (``P2PRTC_MAX_QUEUED_BYTES``): the connection asks ``over_bound`` and
drops a peer that does not keep up, so a slow peer costs memory up to the bound, never
time for the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)


class Outbox:
    """Messages waiting for one peer, and the task that sends them."""

    def __init__(
        self,
        send: Callable[[bytes], Awaitable[None]],
        max_queued_bytes: int,
        *,
        peer: str,
        on_failure: Callable[[], object],
    ) -> None:
        self.queued_bytes = 0
        self._send = send
        self._max_queued_bytes = max_queued_bytes
        self._peer = peer
        self._on_failure = on_failure
        self._messages: deque[bytes] = deque()
        self._queued = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._task = asyncio.create_task(self._run(), name=f"send to {peer}")

    @property
    def empty(self) -> bool:
        return not self._messages

    @property
    def over_bound(self) -> bool:
        return self.queued_bytes > self._max_queued_bytes

    def put(self, messages: list[bytes]) -> None:
        self._messages.extend(messages)
        self.queued_bytes += sum(map(len, messages))
        self._drained.clear()
        self._queued.set()

    async def _run(self) -> None:
        while True:
            await self._queued.wait()
            self._queued.clear()
            while self._messages:
                message = self._messages.popleft()
                self.queued_bytes -= len(message)
                try:
                    await self._send(message)  # waits while the channel's buffer is full
                except Exception as exc:  # any send failure means the link is gone
                    logger.info("sending to %s failed: %s", self._peer, exc)
                    self._clear()
                    self._on_failure()
                    return
            self._drained.set()

    async def flush(self, timeout: float) -> None:
        """Wait until everything queued was handed to the link, at most ``timeout``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), timeout)

    def _clear(self) -> None:
        self._messages.clear()
        self.queued_bytes = 0
        self._drained.set()

    def close(self) -> None:
        if self._task is not asyncio.current_task():
            self._task.cancel()
        self._clear()
