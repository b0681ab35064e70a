"""Where one WebRTC link is in its life: its state, why it closed, and who waits for what.

No aiortc here: `PeerLink` (adapters/webrtc.py) reports what its peer connection and data
channel do (opened, ended), and its callers wait for the link to settle or close.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging

logger = logging.getLogger(__name__)

_link_ids = itertools.count(1)


class LinkState(enum.Enum):
    NEGOTIATING = "negotiating"  # offer made, answer not yet accepted
    CONNECTING = "connecting"  # both descriptions set; ICE, DTLS and SCTP under way
    OPEN = "open"
    CLOSING = "closing"  # close() delivering what was sent before
    CLOSED = "closed"


class LinkLifecycle:
    """One link's state machine: NEGOTIATING -> CONNECTING -> OPEN -> CLOSING -> CLOSED,
    any state may end in CLOSED, and CLOSED is final."""

    def __init__(self) -> None:
        self.id = next(_link_ids)  # names the link in log lines
        self._state = LinkState.NEGOTIATING
        self._close_reason = ""
        self._settled = asyncio.Event()  # open or closed
        self._closed = asyncio.Event()

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def close_reason(self) -> str:
        """Why the link closed ("" while it is not closed)."""
        return self._close_reason

    def set_state(self, new: LinkState) -> None:
        logger.debug("link %d: %s -> %s", self.id, self._state.value, new.value)
        self._state = new

    def opened(self) -> None:
        """The data channel opened: the link is open unless it is no longer connecting."""
        if self._state is LinkState.CONNECTING:
            self.set_state(LinkState.OPEN)
            self._settled.set()

    def end(self, reason: str) -> bool:
        """Enter CLOSED for `reason` and wake every waiter; False when already closed."""
        if self._state is LinkState.CLOSED:
            return False
        self._close_reason = reason
        self.set_state(LinkState.CLOSED)
        logger.info("link %d closed: %s", self.id, reason)
        self._settled.set()
        self._closed.set()
        return True

    async def wait_settled(self) -> None:
        """Until the link is open or closed."""
        await self._settled.wait()

    async def wait_closed(self) -> str:
        """Until the link is closed; returns the reason."""
        await self._closed.wait()
        return self._close_reason
