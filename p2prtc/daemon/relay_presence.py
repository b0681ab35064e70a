"""Relay presence: this daemon on the signaling relays, and the daemons it meets there.

It owns the signaling hub, the topics we listen on (one per share, one per open or sought
invitation), our presence announcements, and the endpoints that others' presence proves.
Without a configured relay every method does nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from p2prtc.core.keys import invite_topic, member_topic
from p2prtc.daemon.endpoints import SIGNAL_PREFIX, Endpoint, PipeOpener
from p2prtc.daemon.invitations import Invitations
from p2prtc.daemon.pipes import BytePipe
from p2prtc.daemon.registry import Registry
from p2prtc.daemon.share import Share, ShareState
from p2prtc.daemon.signal_pipes import OnPipe, SignalHub

# Presence is repeated this often, and forgotten when not heard for PRESENCE_TTL_S.
PRESENCE_INTERVAL_S = 15.0
PRESENCE_TTL_S = 60.0
JOINING_PRESENCE_INTERVAL_S = 1.0


class RelayPresence:
    """Topics, presence and relay endpoints (written into the shared endpoint table)."""

    def __init__(
        self,
        urls: list[str],
        registry: Registry,
        invitations: Invitations,
        endpoints: dict[str, Endpoint],
        *,
        on_pipe: OnPipe,
        poke: Callable[[], None],
    ) -> None:
        self.hub = SignalHub(urls, self._on_presence, on_pipe) if urls else None
        self._registry = registry
        self._invitations = invitations
        self._endpoints = endpoints
        self._poke = poke
        self._invite_hosts: dict[str, list[str]] = {}  # invite topic -> instances offering it
        self._last_presence = 0.0

    async def start(self) -> None:
        if self.hub is not None:
            self.hub.start()
            await self.set_topics()

    def status(self) -> list[dict[str, object]]:
        return self.hub.status() if self.hub is not None else []

    async def set_topics(self) -> None:
        """Listen on exactly the topics of our shares and of the invitations we offer or seek."""
        if self.hub is None:
            return
        shares = self._registry.shares.values()
        topics = {member_topic(share.record.secret) for share in shares}
        topics |= {invite_topic(nameplate) for nameplate in self._invitations.nameplates()}
        await self.hub.set_topics(topics | set(self._invite_hosts))

    async def announce_when_due(self) -> None:
        """Say we are here on every share's topic, now and then (often while joining)."""
        if self.hub is None:
            return
        joining = any(s.state is ShareState.JOINING for s in self._registry.shares.values())
        interval = JOINING_PRESENCE_INTERVAL_S if joining else PRESENCE_INTERVAL_S
        if time.monotonic() - self._last_presence <= interval:
            return
        self._last_presence = time.monotonic()
        for share in list(self._registry.shares.values()):
            await self.hub.announce(member_topic(share.record.secret))
        stale = time.monotonic() - PRESENCE_TTL_S
        for key, endpoint in list(self._endpoints.items()):
            if endpoint.relay_instance is not None and endpoint.seen < stale:
                del self._endpoints[key]

    def _share_for_topic(self, topic: str) -> Share | None:
        shares = self._registry.shares.values()
        return next((s for s in shares if member_topic(s.record.secret) == topic), None)

    def _on_presence(self, topic: str, peer: str, addressed: bool) -> None:
        """Another daemon is on one of our topics: remember it, and answer if it asked."""
        assert self.hub is not None
        if topic in self._invite_hosts:
            if addressed and peer not in self._invite_hosts[topic]:
                self._invite_hosts[topic].append(peer)
            return
        if not addressed:
            self.hub.answer(topic, peer)  # bounded per topic (issue 10)
        share = self._share_for_topic(topic)
        if share is None:
            return  # an invitation topic: the joiner dials us, nothing to remember
        key = f"{SIGNAL_PREFIX}{peer}"
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            opener = self._opener(topic, peer)
            endpoint = self._endpoints[key] = Endpoint(key, opener, shares=set())
        assert endpoint.shares is not None
        endpoint.shares.add(share.share_id)
        endpoint.seen = time.monotonic()
        self._poke()

    def _opener(self, topic: str, peer: str) -> PipeOpener:
        async def open_pipe() -> BytePipe:
            assert self.hub is not None
            return self.hub.open_pipe(topic, peer)

        return open_pipe

    # --- invitations we look for ---------------------------------------------------------

    async def look_for_invitation(self, topic: str) -> None:
        """Listen on an invitation's topic while we redeem it."""
        if self.hub is not None:
            self._invite_hosts[topic] = []
            await self.set_topics()

    async def stop_looking(self, topic: str) -> None:
        self._invite_hosts.pop(topic, None)
        await self.set_topics()

    async def ask_for_invitation(self, topic: str) -> None:
        """Ask on the invitation's topic who offers it (they answer with presence)."""
        if self.hub is not None:
            await self.hub.announce(topic)

    def invitation_hosts(self, topic: str) -> Iterator[Endpoint]:
        """The daemons that answered on an invitation's topic."""
        for peer in self._invite_hosts.get(topic, []):
            yield Endpoint(f"{SIGNAL_PREFIX}{peer}", self._opener(topic, peer))
