"""Client of a y-webrtc compatible signaling relay (wraps `websockets`).

The daemon hands it opaque bytes (already sealed) under opaque topics; on the wire a
message is a y-webrtc `publish` whose `data` is `{"p2prtc": <base64>, "from": <id>}`.
`from` is a random id per client object so the client can drop its own echoes (the
relay sends a publish to every subscriber, the sender included). Anything else
published on a topic (other y-webrtc apps, garbage) is skipped.

The client keeps its subscriptions across reconnects: after a disconnect it waits an
exponentially growing, jittered delay, reconnects and subscribes again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import enum
import json
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidURI, WebSocketException
from websockets.uri import parse_uri

from p2prtc.errors import P2PError
from signaling.limits import TokenBucket

logger = logging.getLogger(__name__)

OnMessage = Callable[[str, bytes], Awaitable[None]]
"""Called with (topic, payload) for each message another client published."""

# Topics per subscribe message on (re)connect: keeps it far below the relay's size limit.
_SUBSCRIBE_BATCH = 64


class SignalingUnavailable(P2PError):
    """The signaling service is not reachable."""


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


class Backoff:
    """Exponential reconnect delays with jitter, so a restarted relay is not stampeded."""

    def __init__(self, minimum: float, maximum: float) -> None:
        self._minimum = minimum
        self._maximum = maximum
        self._next = minimum

    def reset(self) -> None:
        self._next = self._minimum

    def next_delay(self) -> float:
        """The delay before the next attempt: in [d/2, d], d doubling up to the maximum."""
        delay = self._next
        self._next = min(self._maximum, self._next * 2)
        return random.uniform(delay / 2, delay)


class SignalingClient:
    """One connection to a signaling relay, kept alive with its subscriptions."""

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
        self._ws: ClientConnection | None = None
        self._connected = asyncio.Event()
        # The relay answers pings in order and has no message ids: FIFO of waiting pongs.
        self._pongs: collections.deque[asyncio.Future[None]] = collections.deque()
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
        await self._send_confirmed({"type": "subscribe", "topics": [topic]})

    async def unsubscribe(self, topic: str) -> None:
        """Stop receiving `topic`."""
        self._topics.discard(topic)
        await self._send_confirmed({"type": "unsubscribe", "topics": [topic]})

    async def publish(self, topic: str, data: bytes) -> None:
        """Send `data` to the other subscribers of `topic`; SignalingUnavailable if offline."""
        ws = self._ws
        if ws is None or not self.connected:
            raise SignalingUnavailable("not connected")
        blob = base64.b64encode(data).decode("ascii")
        message = {
            "type": "publish",
            "topic": topic,
            "data": {"p2prtc": blob, "from": self._sender_id},
        }
        text = json.dumps(message)
        if len(text) > self._max_message_bytes:
            # The relay would close the whole connection (1009) over it.
            raise SignalingMessageTooLarge(f"{len(data)} bytes")
        if not self._publish_budget.take(time.monotonic()):
            raise SignalingRateLimited()
        try:
            await ws.send(text)
        except ConnectionClosed as exc:
            raise SignalingUnavailable("connection lost") from exc

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
                    await self._session(ws)
            except (OSError, asyncio.TimeoutError, WebSocketException) as exc:
                logger.info("signaling %s: disconnected (%s)", self._url, exc)
            except Exception:
                # Whatever a relay sends must not end the reconnect loop for good.
                logger.exception("signaling %s: unexpected failure", self._url)
            # Even after a good connection, wait a (short) delay: if the relay drops every
            # client at once, they must not all come back in the same instant.
            self._set_state(SignalingState.WAITING)
            await asyncio.sleep(self._backoff.next_delay())

    async def _session(self, ws: ClientConnection) -> None:
        """Serve one connection until it closes."""
        # No await between taking the topics and publishing `ws`: a concurrent subscribe()
        # is either in this snapshot or sends its own message.
        topics = sorted(self._topics)
        self._ws = ws
        setup = asyncio.create_task(self._establish(ws, topics))
        try:
            await self._read(ws)
        finally:
            self._ws = None
            setup.cancel()
            with contextlib.suppress(
                asyncio.CancelledError, ConnectionClosed, SignalingUnavailable
            ):
                await setup
            self._fail_pending_pongs()

    async def _establish(self, ws: ClientConnection, topics: list[str]) -> None:
        """Subscribe again, mark the client connected, then keep the connection alive."""
        for start in range(0, len(topics), _SUBSCRIBE_BATCH):
            batch = topics[start : start + _SUBSCRIBE_BATCH]
            await ws.send(json.dumps({"type": "subscribe", "topics": batch}))
        await self._round_trip(ws)
        self._set_state(SignalingState.CONNECTED)
        # Reset only once the relay answered: one that drops us right after the handshake
        # (e.g. too many connections from our address) sees growing delays.
        self._backoff.reset()
        while True:
            await asyncio.sleep(self._ping_interval)
            # Application-level ping: keeps the relay's idle timeout from closing a quiet
            # connection; a dead relay is caught by the WebSocket keepalive.
            await self._round_trip(ws)

    async def _send_confirmed(self, message: dict[str, Any]) -> None:
        """Send when connected and wait until the relay has processed it; offline: no-op."""
        ws = self._ws
        if ws is None:
            return  # sent on (re)connect from self._topics
        # A lost connection is fine: the next connection subscribes from self._topics.
        with contextlib.suppress(ConnectionClosed, SignalingUnavailable):
            await ws.send(json.dumps(message))
            await self._round_trip(ws)

    async def _round_trip(self, ws: ClientConnection) -> None:
        """Ping the relay and wait for its pong: everything sent before is processed."""
        pong = asyncio.get_running_loop().create_future()
        self._pongs.append(pong)
        try:
            await ws.send(json.dumps({"type": "ping"}))
            await asyncio.wait_for(pong, self._round_trip_timeout)
        except asyncio.TimeoutError:
            # The relay dropped our ping (rate limit) or hangs: either way this connection
            # is not usable, and a fresh one also resets the pong queue.
            logger.warning("signaling %s: no pong, reconnecting", self._url)
            await ws.close()
            raise SignalingUnavailable("no answer from the relay") from None
        finally:
            # Nobody waits for it any more; a late pong still takes it off the queue.
            pong.cancel()

    def _fail_pending_pongs(self) -> None:
        while self._pongs:
            pong = self._pongs.popleft()
            if not pong.done():
                pong.set_exception(SignalingUnavailable("connection lost"))

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            received = self._decode(raw)
            if received is None:
                continue
            topic, payload = received
            try:
                await self._on_message(topic, payload)
            except Exception:
                # A bug in the consumer must not take the signaling connection down.
                logger.exception("signaling message handler failed")

    def _decode(self, raw: str | bytes) -> tuple[str, bytes] | None:
        """(topic, payload) of a message for us; None for anything else."""
        try:
            message = json.loads(raw)
        except (ValueError, RecursionError):
            return None
        if not isinstance(message, dict):
            return None
        kind = message.get("type")
        if kind == "pong":
            self._resolve_pong()
        elif kind == "error":
            logger.warning("signaling relay refused a message: %s", message.get("error"))
        elif kind == "publish":
            return self._decode_publish(message)
        return None

    def _resolve_pong(self) -> None:
        # One pong per ping, in order; a ping whose waiter timed out still owns its pong.
        if self._pongs:
            pong = self._pongs.popleft()
            if not pong.done():
                pong.set_result(None)

    def _decode_publish(self, message: dict[str, Any]) -> tuple[str, bytes] | None:
        topic, data = message.get("topic"), message.get("data")
        if topic not in self._topics or not isinstance(data, dict):
            return None
        blob = data.get("p2prtc")
        if data.get("from") == self._sender_id or not isinstance(blob, str):
            return None
        try:
            return topic, base64.b64decode(blob, validate=True)
        except (binascii.Error, ValueError):
            return None
