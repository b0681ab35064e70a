"""Client of a y-webrtc compatible signaling relay (wraps `websockets`): its life cycle.

The daemon hands it opaque bytes (already sealed) under opaque topics; the messages on the
wire are in `p2prtc/core/relay_wire.py`, one connection's set-up, pings and reading in
`relay_session.py`.

The client keeps its subscriptions across reconnects: after a disconnect it waits an
exponentially growing, jittered delay, reconnects and subscribes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import secrets
import time
from types import TracebackType

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidURI, WebSocketException
from websockets.uri import parse_uri

from p2prtc.adapters.relay_session import OnMessage, RelaySession, SignalingUnavailable
from p2prtc.core import relay_wire
from p2prtc.errors import P2PError
from signaling.backoff import Backoff
from signaling.limits import TokenBucket

__all__ = [
    "Backoff",
    "InvalidSignalingURL",
    "OnMessage",
    "SignalingClient",
    "SignalingMessageTooLarge",
    "SignalingRateLimited",
    "SignalingState",
    "SignalingUnavailable",
]

logger = logging.getLogger(__name__)


class SignalingRateLimited(SignalingUnavailable):
    """Too many messages for the signaling service at once: this one was not sent."""


class SignalingMessageTooLarge(P2PError):
    """The message is too large for the signaling service."""


class InvalidSignalingURL(P2PError):
    """The signaling URL is not a valid ws:// or wss:// URL."""


class SignalingState(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    WAITING = "waiting"
    """Disconnected, waiting out the backoff delay before the next attempt."""
    CLOSED = "closed"


class SignalingClient:
    """One connection to a signaling relay, kept alive with its subscriptions.

    After a disconnect it waits an exponentially growing, jittered delay, reconnects and
    subscribes again (each connection is a RelaySession)."""

    def __init__(
        self,
        url: str,
        on_message: OnMessage,
        *,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
        ping_interval: float = 15.0,
        open_timeout: float = 10.0,
        round_trip_timeout: float = 10.0,
        max_message_bytes: int = 64 * 1024,
        publish_rate: float = 40.0,
        publish_burst: int = 150,
    ) -> None:
        """`max_message_bytes` is the relay's limit (its default); the rest tunes timing.

        `publish_rate` and `publish_burst` keep publishes under the relay's default rate
        limit (50/s, burst 200) with room for our pings and subscriptions: a relay that
        drops our messages would drop a ping too, and we would reconnect for nothing.
        """
        try:
            parse_uri(url)
        except InvalidURI as exc:
            raise InvalidSignalingURL(url) from exc
        self._url = url
        self._on_message = on_message
        self._backoff = Backoff(min_backoff, max_backoff)
        self._ping_interval = ping_interval
        self._open_timeout = open_timeout
        self._round_trip_timeout = round_trip_timeout
        self._max_message_bytes = max_message_bytes
        self._sender_id = secrets.token_hex(8)
        self._publish_budget = TokenBucket(publish_rate, publish_burst, time.monotonic())
        self._topics: set[str] = set()
        self._state = SignalingState.IDLE
        self._session: RelaySession | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return self._url

    @property
    def state(self) -> SignalingState:
        return self._state

    @property
    def connected(self) -> bool:
        """True once connected with every subscription confirmed by the relay."""
        return self._state is SignalingState.CONNECTED

    @property
    def topics(self) -> frozenset[str]:
        return frozenset(self._topics)

    def start(self) -> None:
        """Start connecting in the background (needs a running event loop)."""
        if self._task is None and self._state is not SignalingState.CLOSED:
            self._task = asyncio.create_task(self._run(), name=f"signaling {self._url}")

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Return once connected; raises TimeoutError after `timeout` seconds."""
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def subscribe(self, topic: str) -> None:
        """Receive `topic` from now on (and after every reconnect).

        When connected, returns once the relay has registered the subscription, so a
        message published by anyone after that reaches us.
        """
        self._topics.add(topic)
        if self._session is not None:  # offline: subscribed on (re)connect from _topics
            await self._session.send_confirmed(relay_wire.subscribe([topic]))

    async def unsubscribe(self, topic: str) -> None:
        """Stop receiving `topic`."""
        self._topics.discard(topic)
        if self._session is not None:
            await self._session.send_confirmed(relay_wire.unsubscribe([topic]))

    async def publish(self, topic: str, data: bytes) -> None:
        """Send `data` to the other subscribers of `topic`; SignalingUnavailable if offline."""
        session = self._session
        if session is None or not session.open or not self.connected:
            raise SignalingUnavailable("not connected")
        text = relay_wire.publish(topic, data, self._sender_id)
        if len(text) > self._max_message_bytes:
            # The relay would close the whole connection (1009) over it.
            raise SignalingMessageTooLarge(f"{len(data)} bytes")
        if not self._publish_budget.take(time.monotonic()):
            raise SignalingRateLimited()
        await session.send(text)

    async def close(self) -> None:
        """Disconnect for good; the client cannot be started again."""
        self._set_state(SignalingState.CLOSED)
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        if task is not asyncio.current_task():  # close() from inside on_message
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> SignalingClient:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def _set_state(self, new: SignalingState) -> None:
        if new is self._state:
            return
        logger.info("signaling %s: %s -> %s", self._url, self._state.value, new.value)
        self._state = new
        if new is SignalingState.CONNECTED:
            self._connected.set()
            # Reset only once the relay answered: one that drops us right after the
            # handshake (e.g. too many connections from our address) sees growing delays.
            self._backoff.reset()
        else:
            self._connected.clear()

    async def _run(self) -> None:
        while True:
            self._set_state(SignalingState.CONNECTING)
            try:
                async with connect(
                    self._url,
                    proxy=None,  # only ever contact the relay the user configured
                    compression=None,
                    open_timeout=self._open_timeout,
                    max_size=self._max_message_bytes,
                ) as ws:
                    self._session = RelaySession(
                        ws,
                        url=self._url,
                        sender=self._sender_id,
                        holds=self._topics.__contains__,
                        on_message=self._on_message,
                        on_ready=functools.partial(self._set_state, SignalingState.CONNECTED),
                        ping_interval=self._ping_interval,
                        round_trip_timeout=self._round_trip_timeout,
                    )
                    try:
                        # No await between publishing the session and taking the topics:
                        # a concurrent subscribe() is either in this snapshot or sends its
                        # own message.
                        await self._session.run(sorted(self._topics))
                    finally:
                        self._session = None
            except (OSError, asyncio.TimeoutError, WebSocketException) as exc:
                logger.info("signaling %s: disconnected (%s)", self._url, exc)
            except Exception:
                # Whatever a relay sends must not end the reconnect loop for good.
                logger.exception("signaling %s: unexpected failure", self._url)
            # Even after a good connection, wait a (short) delay: if the relay drops every
            # client at once, they must not all come back in the same instant.
            self._set_state(SignalingState.WAITING)
            await asyncio.sleep(self._backoff.next_delay())
