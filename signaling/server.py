"""The relay: y-webrtc signaling over WebSocket, hardened with limits, health and counters."""

from __future__ import annotations

import asyncio
import http
import json
import logging
import mmap
import os
import ssl
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from signaling.connection import Connection
from signaling.limits import ConnectionSlots, Limits
from signaling.logs import fields
from signaling.protocol import (
    PONG,
    ErrorCode,
    Ping,
    ProtocolError,
    Publish,
    Subscribe,
    Unsubscribe,
    encode_error,
    parse_message,
    publish_body,
    with_clients,
)
from signaling.stats import Counters
from signaling.topics import TopicTable

if TYPE_CHECKING:
    from signaling.cluster import RedisLink

logger = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
# Short: a peer that does not answer our close frame quickly is gone anyway.
_CLOSE_TIMEOUT = 5.0


class SignalingServer:
    """A y-webrtc compatible signaling relay; `start()` binds, `close()` shuts down gracefully."""

    def __init__(
        self,
        host: str,
        port: int,
        limits: Limits | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        real_ip_header: str | None = None,
        redis_url: str | None = None,
    ) -> None:
        """`redis_url`: share topics with the other relays of that Redis (signaling.cluster)."""
        self._host = host
        self._port = port
        self._limits = limits or Limits()
        self._ssl = ssl_context
        self._real_ip_header = real_ip_header
        self._slots = ConnectionSlots(
            self._limits.max_connections_per_address, self._limits.max_connections
        )
        self._topics: TopicTable[Connection] = TopicTable(
            self._limits.max_topics_per_connection,
            self._limits.max_subscribers_per_topic,
            self._limits.max_topic_length,
        )
        self.counters = Counters()
        self._started = time.monotonic()
        self._server: Server | None = None
        self._cluster = _cluster_link(redis_url, self._deliver, self._topics.topics)

    async def start(self) -> None:
        """Bind and start accepting connections (and connecting to Redis, with `redis_url`)."""
        if self._cluster is not None:
            self._cluster.start()
        self._server = await serve(
            self._handle,
            self._host,
            self._port,
            process_request=self._process_request,
            ssl=self._ssl,
            # Relayed payloads are encrypted blobs: compressing them wastes CPU and memory.
            compression=None,
            max_size=self._limits.max_message_bytes,
            ping_interval=self._limits.ping_interval,
            ping_timeout=self._limits.ping_timeout,
            close_timeout=_CLOSE_TIMEOUT,
        )
        self._started = time.monotonic()
        logger.info("server.start", extra=fields(urls=self.urls, **self._limits.as_dict()))

    @property
    def urls(self) -> list[str]:
        """The WebSocket URL of every listening socket (port 0 resolved to the real port)."""
        if self._server is None:
            return []
        scheme = "wss" if self._ssl else "ws"
        urls = []
        for sock in self._server.sockets:
            host, port = sock.getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            urls.append(f"{scheme}://{shown}:{port}")
        return urls

    async def close(self) -> None:
        """Stop accepting, tell every client we are going away (1001) and wait for them."""
        if self._server is None:
            return
        logger.info("server.stopping", extra=fields(connections=self._slots.open))
        self._server.close(code=CloseCode.GOING_AWAY, reason="server shutting down")
        await self._server.wait_closed()
        if self._cluster is not None:
            await self._cluster.close()
        logger.info("server.stopped", extra=fields(**self.counters.as_dict()))

    def health(self) -> dict[str, Any]:
        """Gauges, counters and limits, as served on the health endpoint."""
        degraded = self._cluster is not None and not self._cluster.connected
        return {
            "status": "degraded" if degraded else "ok",
            "redis": self._cluster.health() if self._cluster is not None else None,
            "uptime_seconds": round(time.monotonic() - self._started, 3),
            "connections": self._slots.open,
            "topics": self._topics.topic_count,
            "subscriptions": self._topics.subscription_count,
            "memory_rss_bytes": _current_rss_bytes(),
            "counters": self.counters.as_dict(),
            "limits": self._limits.as_dict(),
        }

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path != HEALTH_PATH:
            return None
        response = ws.respond(http.HTTPStatus.OK, json.dumps(self.health()) + "\n")
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        response.headers["Cache-Control"] = "no-store"
        return response

    def _client_address(self, ws: ServerConnection) -> str:
        if self._real_ip_header and ws.request is not None:
            forwarded = ws.request.headers.get(self._real_ip_header)
            if forwarded:
                # The last entry is the one our own proxy added; earlier ones are client-made.
                return forwarded.rsplit(",", 1)[-1].strip()
        return str(ws.remote_address[0])

    async def _handle(self, ws: ServerConnection) -> None:
        address = self._client_address(ws)
        if not self._slots.acquire(address):
            self.counters.connections_rejected += 1
            logger.warning("connection.rejected", extra=fields(address=address))
            await ws.close(CloseCode.TRY_AGAIN_LATER, "too many connections")
            return
        self.counters.connections_accepted += 1
        connection = Connection(ws, self._limits, self.counters, time.monotonic())
        logger.info("connection.open", extra=fields(conn=connection.id, address=address))
        watchdog = asyncio.create_task(connection.close_when_idle())
        try:
            await self._receive(connection)
        finally:
            watchdog.cancel()
            await self._close_topics(self._topics.remove(connection))
            self._slots.release(address)
            logger.info(
                "connection.close",
                extra=fields(
                    conn=connection.id,
                    code=ws.close_code,
                    seconds=round(time.monotonic() - connection.opened, 3),
                ),
            )

    async def _receive(self, connection: Connection) -> None:
        try:
            while True:
                raw = await connection.ws.recv(decode=False)
                await self._on_message(connection, raw)
        except ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
                self.counters.closed_oversized += 1

    async def _on_message(self, connection: Connection, raw: bytes) -> None:
        now = time.monotonic()
        connection.last_activity = now
        self.counters.messages_received += 1
        self.counters.bytes_received += len(raw)
        if not connection.bucket.take(now):
            await connection.drop_over_rate()
            return
        connection.throttled = False
        try:
            message = parse_message(raw)
        except ProtocolError as exc:
            await connection.refuse(exc)
            return
        if isinstance(message, Subscribe):
            await self._subscribe(connection, message.topics)
        elif isinstance(message, Unsubscribe):
            freed = [t for t in message.topics if self._topics.unsubscribe(connection, t)]
            await self._close_topics(freed)
        elif isinstance(message, Publish):
            self._relay(message, now)
        elif isinstance(message, Ping):
            await connection.ws.send(PONG)

    async def _subscribe(self, connection: Connection, topics: tuple[str, ...]) -> None:
        refused: defaultdict[ErrorCode, list[str]] = defaultdict(list)
        opened = []
        for topic in topics:
            is_new = topic not in self._topics
            reason = self._topics.subscribe(connection, topic)
            if reason is not None:
                refused[reason].append(topic)
            elif is_new:
                opened.append(topic)
        if self._cluster is not None:
            # Before the next message of this connection (a ping, say) is handled, so a
            # pong still means "subscribed": publishes through other relays reach it too.
            await self._cluster.subscribe(opened)
        for reason, names in refused.items():
            self.counters.subscriptions_refused += len(names)
            logger.info(
                "subscribe.refused",
                extra=fields(conn=connection.id, error=reason.value, count=len(names)),
            )
            await connection.ws.send(encode_error(reason, "subscription refused", tuple(names)))

    async def _close_topics(self, topics: list[str]) -> None:
        """Topics no local client holds any more: other relays need not send them here."""
        if self._cluster is not None:
            await self._cluster.unsubscribe(topics)

    def _relay(self, publish: Publish, now: float) -> None:
        self.counters.publishes += 1
        body = publish_body(publish)
        if self._cluster is not None:
            self._cluster.publish(publish.topic, body)
        if not self._deliver(publish.topic, body, now):
            self.counters.publishes_unrouted += 1

    def _deliver(self, topic: str, body: str, now: float | None = None) -> bool:
        """Send a publish body to this relay's subscribers of `topic`; False if none."""
        receivers = self._topics.subscribers(topic)
        if not receivers:
            return False
        now = time.monotonic() if now is None else now
        # `clients` counts the receivers on this relay, the ones it was sent to.
        payload = with_clients(body, len(receivers))
        reachable = [receiver for receiver in receivers if receiver.keeps_up()]
        for receiver in reachable:
            receiver.last_activity = now
        # broadcast() writes without waiting, so one slow receiver cannot stall the others;
        # keeps_up bounds what piles up for each.
        broadcast([receiver.ws for receiver in reachable], payload)
        self.counters.deliveries += len(reachable)
        return True


def _cluster_link(
    redis_url: str | None,
    deliver: Callable[[str, str], object],
    held_topics: Callable[[], Iterable[str]],
) -> RedisLink | None:
    if redis_url is None:
        return None
    # Imported only here: a single relay needs no `redis` package.
    from signaling.cluster import RedisLink

    return RedisLink(redis_url, deliver, held_topics)


def _current_rss_bytes() -> int | None:
    """Resident memory of this process where /proc tells it (Linux), else None."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as statm:
            return int(statm.read().split()[1]) * mmap.PAGESIZE
    except OSError:
        return None
