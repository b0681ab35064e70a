"""One WebSocket connection of the signaling client to its relay: set up, kept alive, read.

On a new connection the client's topics are subscribed again and confirmed by a ping (the
relay answers pings in order and has no message ids: a pong means everything sent before
it was processed); then an application-level ping every `ping_interval` keeps the relay's
idle timeout from closing a quiet connection. Messages are read until the connection ends.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from p2prtc.core import relay_wire
from p2prtc.errors import P2PError

logger = logging.getLogger(__name__)

OnMessage = Callable[[str, bytes], Awaitable[None]]
"""Called with (topic, payload) for each message another client published."""

# Topics per subscribe message on (re)connect: keeps it far below the relay's size limit.
_SUBSCRIBE_BATCH = 64


class SignalingUnavailable(P2PError):
    """The signaling service is not reachable."""


class RelaySession:
    """Serves one open connection (``run``) and sends on it while it is open."""

    def __init__(
        self,
        ws: ClientConnection,
        *,
        url: str,
        sender: str,
        holds: Callable[[str], bool],
        on_message: OnMessage,
        on_ready: Callable[[], None],
        ping_interval: float,
        round_trip_timeout: float,
    ) -> None:
        """``sender``: the client's id on the wire; ``holds``: whether the client holds a
        topic now; ``on_ready``: every topic is subscribed and confirmed."""
        self._ws = ws
        self._url = url
        self._sender = sender
        self._holds = holds
        self._on_message = on_message
        self._on_ready = on_ready
        self._ping_interval = ping_interval
        self._round_trip_timeout = round_trip_timeout
        self._open = True
        # The relay answers pings in order and has no message ids: FIFO of waiting pongs.
        self._pongs: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def open(self) -> bool:
        """False once the connection is being torn down: nothing more is sent on it."""
        return self._open

    async def run(self, topics: list[str]) -> None:
        """Subscribe to ``topics`` and keep the connection alive until it closes."""
        setup = asyncio.create_task(self._establish(topics))
        try:
            await self._read()
        finally:
            self._open = False
            setup.cancel()
            with contextlib.suppress(
                asyncio.CancelledError, ConnectionClosed, SignalingUnavailable
            ):
                await setup
            self._fail_pending_pongs()

    async def send(self, text: str) -> None:
        """Send without waiting for the relay; SignalingUnavailable if the connection is lost."""
        try:
            await self._ws.send(text)
        except ConnectionClosed as exc:
            raise SignalingUnavailable("connection lost") from exc

    async def send_confirmed(self, text: str) -> None:
        """Send and wait until the relay has processed it; a closed connection: no-op."""
        if not self._open:
            return
        # A lost connection is fine: the next connection subscribes from the client's topics.
        with contextlib.suppress(ConnectionClosed, SignalingUnavailable):
            await self._ws.send(text)
            await self._round_trip()

    async def _establish(self, topics: list[str]) -> None:
        """Subscribe again, report the connection ready, then keep it alive."""
        for start in range(0, len(topics), _SUBSCRIBE_BATCH):
            await self._ws.send(relay_wire.subscribe(topics[start : start + _SUBSCRIBE_BATCH]))
        await self._round_trip()
        self._on_ready()
        while True:
            await asyncio.sleep(self._ping_interval)
            # Application-level ping: keeps the relay's idle timeout from closing a quiet
            # connection; a dead relay is caught by the WebSocket keepalive.
            await self._round_trip()

    async def _round_trip(self) -> None:
        """Ping the relay and wait for its pong: everything sent before is processed."""
        pong = asyncio.get_running_loop().create_future()
        self._pongs.append(pong)
        try:
            await self._ws.send(relay_wire.PING)
            await asyncio.wait_for(pong, self._round_trip_timeout)
        except asyncio.TimeoutError:
            # The relay dropped our ping (rate limit) or hangs: either way this connection
            # is not usable, and a fresh one also resets the pong queue.
            logger.warning("signaling %s: no pong, reconnecting", self._url)
            await self._ws.close()
            raise SignalingUnavailable("no answer from the relay") from None
        finally:
            # Nobody waits for it any more; a late pong still takes it off the queue.
            pong.cancel()

    def _fail_pending_pongs(self) -> None:
        while self._pongs:
            pong = self._pongs.popleft()
            if not pong.done():
                pong.set_exception(SignalingUnavailable("connection lost"))

    async def _read(self) -> None:
        async for raw in self._ws:
            received = relay_wire.decode(raw, self._sender, self._holds)
            if isinstance(received, relay_wire.Pong):
                self._resolve_pong()
            elif isinstance(received, relay_wire.Refused):
                logger.warning("signaling relay refused a message: %s", received.error)
            elif isinstance(received, relay_wire.Published):
                try:
                    await self._on_message(received.topic, received.payload)
                except Exception:
                    # A bug in the consumer must not take the signaling connection down.
                    logger.exception("signaling message handler failed")

    def _resolve_pong(self) -> None:
        # One pong per ping, in order; a ping whose waiter timed out still owns its pong.
        if self._pongs:
            pong = self._pongs.popleft()
            if not pong.done():
                pong.set_result(None)
