"""One client connection of the relay and its own rules: rate budget, idleness, backlog.

A connection that sends too fast has its excess dropped (told once, not once per message);
one that is quiet for the idle timeout is closed; one whose unsent backlog grows over the
limit (it does not read) is cut. Each rule counts in the relay's counters.
"""

from __future__ import annotations

import asyncio
import logging
import time

from websockets.asyncio.server import ServerConnection
from websockets.frames import CloseCode

from signaling.limits import Limits, TokenBucket
from signaling.logs import fields
from signaling.protocol import ErrorCode, ProtocolError, encode_error
from signaling.stats import Counters

logger = logging.getLogger(__name__)


class Connection:
    """What the relay knows about one open connection, and what it does to it."""

    def __init__(
        self, ws: ServerConnection, limits: Limits, counters: Counters, now: float
    ) -> None:
        self.ws = ws
        self.id = ws.id.hex[:12]
        self.opened = now
        self.last_activity = now
        self.bucket = TokenBucket(limits.messages_per_second, limits.message_burst, now)
        self._limits = limits
        self._counters = counters
        # Set after a drop was reported, so a flooder gets one error, not one per message.
        self.throttled = False
        self.dropped = False

    async def close_when_idle(self) -> None:
        """Close the connection once nothing went to or from it for the idle timeout."""
        timeout = self._limits.idle_timeout
        while (idle := time.monotonic() - self.last_activity) < timeout:
            await asyncio.sleep(timeout - idle)
        self._counters.closed_idle += 1
        logger.info("connection.idle", extra=fields(conn=self.id))
        await self.ws.close(CloseCode.NORMAL_CLOSURE, "idle timeout")

    async def drop_over_rate(self) -> None:
        """A message over the rate limit was dropped: say so, once per burst."""
        self._counters.rate_limited += 1
        if self.throttled:
            return
        self.throttled = True
        logger.info("connection.rate_limited", extra=fields(conn=self.id))
        await self.ws.send(encode_error(ErrorCode.RATE_LIMITED, "too many messages, dropped"))

    async def refuse(self, exc: ProtocolError) -> None:
        """A message the relay cannot act on: the error goes back, the connection stays."""
        if exc.code is ErrorCode.UNKNOWN_TYPE:
            self._counters.unknown_type += 1
        else:
            self._counters.malformed += 1
        logger.debug("message.refused", extra=fields(conn=self.id, error=exc.code.value))
        await self.ws.send(encode_error(exc.code, exc.detail))

    def keeps_up(self) -> bool:
        """False, after dropping it, for a receiver whose unsent backlog is over the limit."""
        if self.dropped:
            return False
        if self.ws.transport.get_write_buffer_size() <= self._limits.max_send_buffer_bytes:
            return True
        self.dropped = True
        self._counters.closed_slow += 1
        logger.warning("connection.slow", extra=fields(conn=self.id))
        # A close frame would queue behind the backlog it is meant to cut: abort instead.
        self.ws.transport.abort()
        return False
