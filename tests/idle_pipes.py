"""A LAN neighbour that opens many rendezvous pipes as a member and then says nothing.

It runs in a thread of its own, keeps ``count`` pipes open from a source address of its
own on loopback (reopening any the daemon closes), and counts how many the daemon accepted.
"""

from __future__ import annotations

import asyncio
import threading

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from p2prtc.core.messages import Opening, OpeningKind


class IdlePipes:
    def __init__(self, port: int, count: int, source: str = "127.0.0.2") -> None:
        self._port, self._count, self._source = port, count, source
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.accepted_at_once = 0  # most pipes the daemon answered "ok" to at one time
        self.opened = 0

    def __enter__(self) -> IdlePipes:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _run(self) -> None:
        accepted: set[int] = set()
        await asyncio.gather(*(self._hold(slot, accepted) for slot in range(self._count)))

    async def _hold(self, slot: int, accepted: set[int]) -> None:
        while not self._stop.is_set():
            try:
                async with connect(
                    f"ws://127.0.0.1:{self._port}/",
                    local_addr=(self._source, 0),
                    proxy=None,
                    open_timeout=5,
                ) as pipe:
                    self.opened += 1
                    await pipe.send(Opening(OpeningKind.MEMBER).encode())
                    await self._idle(pipe, slot, accepted)
            except (OSError, WebSocketException, TimeoutError):
                await asyncio.sleep(0.2)  # refused or closed: try again, gently
            finally:
                accepted.discard(slot)

    async def _idle(self, pipe: ClientConnection, slot: int, accepted: set[int]) -> None:
        """Read the answer, then say nothing until the daemon closes the pipe or we stop."""
        answer = await asyncio.wait_for(pipe.recv(), 5)
        if b'"ok": true' in (answer if isinstance(answer, bytes) else answer.encode()):
            accepted.add(slot)
            self.accepted_at_once = max(self.accepted_at_once, len(accepted))
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(pipe.recv(), 0.2)
            except TimeoutError:
                continue
