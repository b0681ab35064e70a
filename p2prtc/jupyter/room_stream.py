"""One attached room link's traffic: the room's doc changes out, the daemon's lines in.

A stream lives from an attach until the link or the room ends (see `p2prtc/core/roomlink.py`
for the lines). What the daemon sends is applied to the room's doc without being sent back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from pycrdt import TransactionEvent

from p2prtc import control
from p2prtc.core import roomlink

logger = logging.getLogger(__name__)


class RoomStream:
    """Pumps one room's updates both ways over one open link (follows the doc from birth)."""

    def __init__(
        self,
        room: Any,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        on_awareness: Callable[[bytes], None],
        on_change_here: Callable[[], None],
    ) -> None:
        """``on_awareness``: other machines' awareness arrived; ``on_change_here``: the
        room's doc changed by an edit made here (not by the daemon)."""
        self._room = room
        self._reader = reader
        self._writer = writer
        self._on_awareness = on_awareness
        self._on_change_here = on_change_here
        self._outgoing: asyncio.Queue[bytes] = asyncio.Queue()
        self._applying = False  # the daemon's update is being applied: do not send it back
        self._subscription = room.ydoc.observe(self._on_room_change)

    def send(self, message: dict[str, Any]) -> None:
        """Queue a line for the daemon."""
        self._outgoing.put_nowait(control.encode_message(message))

    async def run(self) -> bool:
        """Until the link or the room ends: True when the daemon detached the room (the share
        was left), False when the daemon went away or the room stopped."""
        sender = asyncio.create_task(self._send_loop())
        receiver = asyncio.create_task(self._receive_loop())
        room_stopped = asyncio.create_task(self._room._stopped.wait())
        detached = False
        try:
            await asyncio.wait({receiver, room_stopped}, return_when=asyncio.FIRST_COMPLETED)
            if receiver.done():
                detached = receiver.result()
        except Exception as exc:  # a broken link: try again, the room keeps working
            logger.info("room %s lost the daemon: %s", self._room.room_id, exc)
        finally:
            for task in (sender, receiver, room_stopped):
                task.cancel()
            await asyncio.gather(sender, receiver, room_stopped, return_exceptions=True)
            self._writer.close()
            self._room.ydoc.unobserve(self._subscription)
        return detached

    def _on_room_change(self, event: TransactionEvent) -> None:
        if self._applying:
            return
        self.send(roomlink.update_message(event.update))
        self._on_change_here()

    def _apply(self, update: bytes) -> None:
        self._applying = True
        try:
            self._room.ydoc.apply_update(update)
        finally:
            self._applying = False

    async def _send_loop(self) -> None:
        while True:
            self._writer.write(await self._outgoing.get())
            await self._writer.drain()

    async def _receive_loop(self) -> bool:
        """True when the daemon detached us (share left), False when it went away."""
        while line := await self._reader.readline():
            message = roomlink.parse_message(control.decode_message(line))
            if isinstance(message, roomlink.Detached):
                logger.info("room %s detached: %s", self._room.room_id, message.reason)
                return True
            if isinstance(message, roomlink.Awareness):
                self._on_awareness(message.update)
            else:
                self._apply(message.update)
        return False
