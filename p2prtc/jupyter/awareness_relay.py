"""The awareness relay of an attached room: who is in it (its tabs, their cursors), both ways.

The tabs' awareness changes leave for the daemon coalesced, at most every
AWARENESS_INTERVAL_S; other machines' awareness, from the daemon, is shown to the tabs.
Awareness is advisory: a bad update is dropped, never an error of the link.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from p2prtc.core import roomlink

logger = logging.getLogger(__name__)

# Awareness (who is there, their cursors) leaves at most this often, changes coalesced.
AWARENESS_INTERVAL_S = 0.05

SendMessage = Callable[[dict[str, Any]], None]


class AwarenessRelay:
    """Carries one room's awareness over whichever link stream is running (``start``)."""

    def __init__(self, room: Any) -> None:
        self._room = room
        self._send: SendMessage | None = None  # the running stream's; None between streams
        self._subscription: str | None = None
        self._changed: set[int] = set()  # tab clients whose state is not sent yet

    def start(self, send: SendMessage) -> None:
        """Follow the tabs' awareness into ``send``, starting with who is here already."""
        self._send = send
        self._subscription = self._room.awareness.observe(self._on_change)
        # The room's own, empty state is no collaborator.
        self._send_states([c for c, state in self._room.awareness.states.items() if state])

    def stop(self) -> None:
        self._send = None
        if self._subscription is not None:
            self._room.awareness.unobserve(self._subscription)
            self._subscription = None

    def apply(self, update: bytes) -> None:
        """Other machines' tabs, shown to ours: "local" makes the room broadcast them."""
        try:
            self._room.awareness.apply_awareness_update(update, "local")
        except Exception as exc:  # awareness is advisory: a bad one is dropped
            logger.info("room %s: dropped an awareness update: %s", self._room.room_id, exc)

    def _on_change(self, topic: str, changes: tuple[dict[str, list[int]], Any]) -> None:
        """The tabs' awareness (applied by the room with itself as origin) leaves coalesced;
        what came from other machines (origin "local", see ``apply``) does not."""
        what, origin = changes
        if topic != "update" or origin is not self._room:
            return
        if not self._changed:
            asyncio.get_running_loop().call_later(AWARENESS_INTERVAL_S, self._flush)
        self._changed.update(client for ids in what.values() for client in ids)

    def _flush(self) -> None:
        clients, self._changed = list(self._changed), set()
        self._send_states(clients)

    def _send_states(self, clients: list[int]) -> None:
        if clients and self._send is not None:
            update = self._room.awareness.encode_awareness_update(clients)
            self._send(roomlink.awareness_message(update))
