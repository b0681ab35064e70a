"""Rendezvous through signaling relays: presence announcements and pipes over topics.

On a topic (hashed: an invitation's nameplate, or a share's secret) daemons publish
*presence* (their random per-run instance id) and answer others' presence directly, so both
sides learn who is there. A *pipe* is a session between two instances on a topic, carrying
the same messages as a LAN rendezvous WebSocket (envelope, handshake, sealed SDP); it is
addressed, numbered (duplicates via several relays are dropped) and bounded. Relays see
hashed topics, random ids and handshake bytes: no names, no contents, no secrets.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from p2prtc.adapters.signaling import SignalingClient, SignalingUnavailable
from p2prtc.core.messages import BadMessage, SignalKind, SignalMessage
from p2prtc.daemon.presence import PresenceReplies

logger = logging.getLogger(__name__)

MAX_LISTENER_PIPES = 32

# (topic, peer instance, addressed to us) -> None
OnPresence = Callable[[str, str, bool], None]
OnPipe = Callable[["SignalPipe"], Awaitable[None]]


class SignalPipe:
    """A byte pipe to one instance over a signaling topic (same interface as a LAN Pipe)."""

    def __init__(self, hub: SignalHub, topic: str, peer: str, session: str) -> None:
        self.hub = hub
        self.topic = topic
        self.peer = peer
        self.session = session
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue(maxsize=64)
        self._sent = 0
        self._received = 0

    @property
    def remote_address(self) -> str:
        return f"signal:{self.peer}"

    @property
    def direct(self) -> bool:
        return False  # relays carry small messages (a notebook's state goes by WebRTC)

    async def send(self, data: bytes) -> None:
        number, self._sent = self._sent, self._sent + 1
        await self.hub.publish(
            self.topic,
            SignalMessage(
                SignalKind.PIPE, self.hub.instance, self.peer, self.session, number, data
            ),
        )

    async def recv(self, timeout: float | None = None) -> bytes:
        return await asyncio.wait_for(self._inbox.get(), timeout)

    def deliver(self, number: int, data: bytes) -> None:
        if number != self._received:
            return  # a duplicate through a second relay, or out of order: drop it
        self._received += 1
        if self._inbox.full():
            logger.info("signal pipe %s overflowed; dropping", self.session)
            return
        self._inbox.put_nowait(data)

    async def close(self) -> None:
        self.hub.forget(self)


class SignalHub:
    """This daemon's presence on one or more signaling relays."""

    def __init__(self, urls: list[str], on_presence: OnPresence, on_pipe: OnPipe) -> None:
        self.instance = secrets.token_hex(8)
        self._clients = [SignalingClient(url, self._on_message) for url in urls]
        self._on_presence = on_presence
        self._on_pipe = on_pipe
        self._pipes: dict[str, SignalPipe] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._replies = PresenceReplies()

    @property
    def urls(self) -> list[str]:
        return [client.url for client in self._clients]

    def status(self) -> list[dict[str, Any]]:
        return [{"url": c.url, "connected": c.connected} for c in self._clients]

    def answer(self, topic: str, peer: str) -> None:
        """Announce ourselves to `peer`, who announced on `topic`, unless over the bounds."""
        if not self._replies.allow(topic, peer, asyncio.get_running_loop().time()):
            return
        task = asyncio.create_task(self.announce(topic, to=peer), name="presence reply")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start(self) -> None:
        for client in self._clients:
            client.start()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for client in self._clients:
            await client.close()

    async def set_topics(self, topics: set[str]) -> None:
        """Subscribe to exactly these topics (kept across reconnects by the clients)."""
        self._replies.forget_topics_except(topics)
        for client in self._clients:
            for topic in client.topics - topics:
                await client.unsubscribe(topic)
            for topic in topics - client.topics:
                await client.subscribe(topic)

    async def announce(self, topic: str, to: str = "") -> None:
        try:
            await self.publish(topic, SignalMessage(SignalKind.PRESENCE, self.instance, to))
        except SignalingUnavailable:
            logger.debug("no signaling relay reachable to announce on")

    async def publish(self, topic: str, message: SignalMessage) -> None:
        data = message.encode()
        sent = False
        for client in self._clients:
            if client.connected:
                try:
                    await client.publish(topic, data)
                    sent = True
                except SignalingUnavailable:
                    continue
        if not sent:
            raise SignalingUnavailable()

    def open_pipe(self, topic: str, peer: str) -> SignalPipe:
        pipe = SignalPipe(self, topic, peer, secrets.token_hex(8))
        self._pipes[pipe.session] = pipe
        return pipe

    def forget(self, pipe: SignalPipe) -> None:
        self._pipes.pop(pipe.session, None)

    async def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            message = SignalMessage.decode(payload)
        except BadMessage:
            return  # anyone may publish on a relay topic: junk is dropped quietly
        if message.sender == self.instance or message.to not in ("", self.instance):
            return
        if message.kind is SignalKind.PRESENCE:
            self._on_presence(topic, message.sender, message.to == self.instance)
        elif message.to == self.instance:
            self._on_pipe_message(topic, message)

    def _on_pipe_message(self, topic: str, message: SignalMessage) -> None:
        pipe = self._pipes.get(message.session)
        if pipe is None:
            if message.number != 0 or len(self._pipes) >= MAX_LISTENER_PIPES:
                return
            pipe = SignalPipe(self, topic, message.sender, message.session)
            self._pipes[message.session] = pipe
            task = asyncio.create_task(self._serve(pipe), name=f"signal pipe {message.session}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if pipe.peer == message.sender and pipe.topic == topic:
            pipe.deliver(message.number, message.data)

    async def _serve(self, pipe: SignalPipe) -> None:
        try:
            await self._on_pipe(pipe)
        finally:
            self.forget(pipe)
