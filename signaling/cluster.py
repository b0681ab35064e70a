"""Several relays as one: topics shared through Redis pub/sub (wraps `redis.asyncio`).

Each relay subscribes in Redis only to the topics its own clients hold (channel
`p2prtc-signal:<topic>`), delivers a publish to its own clients at once, and forwards it
to Redis as `<relay id> <message>`; a relay skips what it published itself, so every
client gets a message once. The link is one connection for subscriptions and one for
publishes; when either fails the relay goes on serving its own clients (degraded),
retries with a growing delay and, once back, subscribes again to every topic it holds.
Publishes made while the link is down reach only the relay's own clients.

Its parts: the messages in Redis (cluster_wire.py), the publishes' queue (cluster_outbox.py),
the subscribes' confirmations (confirmations.py), the reconnect delays (backoff.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from signaling import cluster_wire
from signaling.backoff import Backoff
from signaling.cluster_outbox import Outbox
from signaling.cluster_wire import CHANNEL_PREFIX
from signaling.confirmations import Confirmations
from signaling.logs import fields

__all__ = ["CHANNEL_PREFIX", "LinkState", "OnRemote", "RedisLink", "redacted"]

logger = logging.getLogger(__name__)

# Channels per SUBSCRIBE command when (re)subscribing everything at once.
_SUBSCRIBE_BATCH = 256
# A client's subscribe waits this long for Redis to confirm before the relay moves on.
_CONFIRM_TIMEOUT = 2.0
# Connecting, and closing a connection, take at most this long.
_LINK_TIMEOUT = 5.0
# The subscription connection pings Redis this often, and a Redis silent for
# _SILENCE_LIMIT (hung, or a network that drops packets without a reset) is given up.
_KEEPALIVE_INTERVAL = 2.0
_SILENCE_LIMIT = 6.0
# Closing cancels the link's task again this often until it has ended (see close).
_CANCEL_AGAIN_S = 0.1

OnRemote = Callable[[str, str], object]
"""Called with (topic, message) for each publish another relay forwarded."""


class LinkState(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DEGRADED = "degraded"
    """The link failed: serving local clients only, waiting to retry."""
    CLOSED = "closed"


def redacted(url: str) -> str:
    """The URL without its password, for logs and the health endpoint."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urlunsplit(parts._replace(netloc=netloc))


class RedisLink:
    """This relay's link to the others; `start()` connects in the background."""

    def __init__(
        self,
        url: str,
        on_remote: OnRemote,
        held_topics: Callable[[], Iterable[str]],
        *,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
        max_queued: int = 10_000,
    ) -> None:
        self.relay_id = secrets.token_hex(8)
        self._url = url
        self._on_remote = on_remote
        self._held_topics = held_topics
        self._backoff = Backoff(min_backoff, max_backoff)
        self._state = LinkState.CONNECTING
        self._since = time.monotonic()
        self._pubsub: PubSub | None = None
        self._last_heard = 0.0
        self._confirmations = Confirmations()
        self._task: asyncio.Task[None] | None = None
        self.counters = {
            "published": 0,
            "received": 0,
            "refused": 0,
            "dropped": 0,
            "reconnects": 0,
        }
        self._outbox = Outbox(max_queued, self.counters)

    @property
    def connected(self) -> bool:
        return self._state is LinkState.CONNECTED

    def health(self) -> dict[str, Any]:
        """What /healthz says about the link."""
        return {
            "url": redacted(self._url),
            "state": self._state.value,
            "state_seconds": round(time.monotonic() - self._since, 3),
            "relay_id": self.relay_id,
            **self.counters,
        }

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="redis link")

    async def close(self) -> None:
        self._set_state(LinkState.CLOSED)  # for good: the reconnect loop ends on it
        task = self._task
        # Cancelled until it has ended: in Python 3.11 asyncio.wait_for can swallow a
        # cancellation that lands as the call it waits for fails (CPython gh-86296). The
        # reconnect loop then ran on, and the relay, stopped while Redis was down, never
        # exited (1 run in 20 of a test that stops relays after killing Redis).
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=_CANCEL_AGAIN_S)

    async def subscribe(self, topics: Iterable[str]) -> None:
        """Receive these topics from the other relays; returns once Redis confirmed.

        Offline it returns at once: the next connection subscribes to every held topic.
        """
        pubsub = self._pubsub
        channels = [cluster_wire.channel(topic) for topic in topics]
        if pubsub is None or not channels:
            return
        waiters = [self._confirmations.expect(channel) for channel in channels]
        try:
            await pubsub.subscribe(*channels)
            await asyncio.wait_for(asyncio.gather(*waiters), _CONFIRM_TIMEOUT)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            # The reader notices a broken link and reconnects; a client never waits longer.
            logger.warning("redis.subscribe_unconfirmed", extra=fields(error=str(exc)))

    async def unsubscribe(self, topics: Iterable[str]) -> None:
        """Stop receiving topics no local client holds any more."""
        pubsub = self._pubsub
        channels = [cluster_wire.channel(topic) for topic in topics]
        if pubsub is None or not channels:
            return
        with contextlib.suppress(RedisError, OSError):
            await pubsub.unsubscribe(*channels)

    def publish(self, topic: str, message: str) -> None:
        """Forward a publish to the other relays (without waiting); dropped when offline."""
        if not self.connected:
            self.counters["dropped"] += 1
            return
        self._outbox.put(cluster_wire.channel(topic), cluster_wire.body(self.relay_id, message))

    def _set_state(self, new: LinkState) -> None:
        if new is self._state or self._state is LinkState.CLOSED:
            return
        level = logging.WARNING if new is LinkState.DEGRADED else logging.INFO
        logger.log(
            level,
            "redis.state",
            extra=fields(url=redacted(self._url), old=self._state.value, new=new.value),
        )
        self._state = new
        self._since = time.monotonic()

    async def _run(self) -> None:
        while self._state is not LinkState.CLOSED:
            try:
                await self._session()
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                logger.warning("redis.lost", extra=fields(error=str(exc) or type(exc).__name__))
            except Exception:
                # Whatever Redis answers must not end the reconnect loop for good.
                logger.exception("redis.failed")
            self._set_state(LinkState.DEGRADED)
            self.counters["reconnects"] += 1
            # Doubling from min to max with jitter, so relays do not come back in step.
            await asyncio.sleep(self._backoff.next_delay())
            self._set_state(LinkState.CONNECTING)

    def _client(self) -> Redis:
        # Our own reconnect loop decides when to retry; redis-py must not retry behind it.
        return Redis.from_url(self._url, retry=Retry(NoBackoff(), 0))

    async def _session(self) -> None:
        """One connection to Redis: subscribe to the held topics, then relay both ways."""
        subscriber, publisher = self._client(), self._client()
        pubsub = subscriber.pubsub()
        try:
            await asyncio.wait_for(publisher.ping(), _LINK_TIMEOUT)
            # Connects the subscription connection; its pong is read by _read.
            await asyncio.wait_for(pubsub.ping(), _LINK_TIMEOUT)
            self._pubsub = pubsub
            self._last_heard = time.monotonic()
            # Taken after _pubsub is set, with no await in between: a topic opened from
            # now on is subscribed by its own subscribe() call.
            held = list(self._held_topics())
            tasks = {
                asyncio.create_task(self._read(pubsub)),
                asyncio.create_task(self._outbox.send_to(publisher)),
                asyncio.create_task(self._keep_alive(pubsub)),
            }
            try:
                for start in range(0, len(held), _SUBSCRIBE_BATCH):
                    await self.subscribe(held[start : start + _SUBSCRIBE_BATCH])
                self._set_state(LinkState.CONNECTED)
                self._backoff.reset()
                done, _ = await asyncio.wait(tasks, return_when="FIRST_COMPLETED")
                for task in done:
                    task.result()  # the failure that ended the session
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._pubsub = None
            self._confirmations.cancel_all()
            self._outbox.drop_all()
            for closable in (pubsub, subscriber, publisher):
                with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
                    # A hung Redis must not hold the reconnect loop either.
                    await asyncio.wait_for(closable.aclose(), _LINK_TIMEOUT)

    async def _read(self, pubsub: PubSub) -> None:
        while True:
            message = await pubsub.get_message(timeout=None)
            self._last_heard = time.monotonic()
            if message is not None:
                self._on_redis_message(message)

    async def _keep_alive(self, pubsub: PubSub) -> None:
        while True:
            await asyncio.sleep(_KEEPALIVE_INTERVAL)
            if time.monotonic() - self._last_heard > _SILENCE_LIMIT:
                raise RedisConnectionError("Redis stopped answering")
            await asyncio.wait_for(pubsub.ping(), _LINK_TIMEOUT)

    def _on_redis_message(self, message: dict[str, Any]) -> None:
        event = cluster_wire.read(message, self.relay_id)
        if isinstance(event, cluster_wire.Confirmed):
            self._confirmations.confirmed(event.channel)
        elif isinstance(event, cluster_wire.Foreign):
            self.counters["refused"] += 1
        elif isinstance(event, cluster_wire.Remote):
            self.counters["received"] += 1
            self._on_remote(event.topic, event.body)
