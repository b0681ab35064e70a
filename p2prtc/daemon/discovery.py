"""Discovery: what this daemon announces, and the endpoints it learns.

It owns the mDNS announcer and browser, the signaling hub's topics and presence, static
peers from the configuration, and the endpoint table they fill. The dialer reads that table.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator

from p2prtc.adapters.mdns import Announcer, Browser, DiscoveredService, lan_addresses
from p2prtc.core.keys import epoch_of, invite_topic, member_topic
from p2prtc.core.messages import Announcement, BadMessage
from p2prtc.daemon.config import DaemonConfig
from p2prtc.daemon.endpoints import SIGNAL_PREFIX, Endpoint, PipeOpener, lan_opener
from p2prtc.daemon.invitations import Invitations
from p2prtc.daemon.pipes import BytePipe
from p2prtc.daemon.registry import Registry
from p2prtc.daemon.share import Share, ShareState
from p2prtc.daemon.signal_pipes import OnPipe, SignalHub
from p2prtc.daemon.tasks import Spawn

logger = logging.getLogger(__name__)

# Signaling presence is repeated this often, and forgotten when not heard for PRESENCE_TTL_S.
PRESENCE_INTERVAL_S = 15.0
PRESENCE_TTL_S = 60.0
JOINING_PRESENCE_INTERVAL_S = 1.0


class Discovery:
    """mDNS and relay presence in, endpoints out; announcements kept up to date."""

    def __init__(
        self,
        config: DaemonConfig,
        registry: Registry,
        invitations: Invitations,
        *,
        on_pipe: OnPipe,
        poke: Callable[[], None],
        spawn: Spawn,
    ) -> None:
        self.config = config
        self.endpoints: dict[str, Endpoint] = {}
        self.signal = (
            SignalHub(config.signal_urls, self._on_presence, on_pipe)
            if config.signal_urls
            else None
        )
        self._registry = registry
        self._invitations = invitations
        self._poke = poke
        self._spawn = spawn
        self._invite_hosts: dict[str, list[str]] = {}  # invite topic -> instances offering it
        self._last_presence = 0.0
        self._announcer: Announcer | None = None
        self._browser: Browser | None = None
        self._announced = Announcement()

    async def start(self, rendezvous_port: int) -> None:
        for host, port in self.config.peers:
            key = f"{host}:{port}"
            self.endpoints[key] = Endpoint(key, lan_opener(host, port))
        if self.signal is not None:
            self.signal.start()
            await self.refresh()
        if self.config.mdns:
            await self._start_mdns(rendezvous_port)

    async def _start_mdns(self, rendezvous_port: int) -> None:
        interfaces = self.config.interfaces or lan_addresses()
        self._announced = self._announcement()
        properties = self._announced.encode()
        self._announcer = await Announcer.start(interfaces, rendezvous_port, properties)
        self._browser = await Browser.start(interfaces, self._on_service, self._on_service_gone)

    async def close(self) -> None:
        for closer in (self._announcer, self._browser, self.signal):
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer.close()

    # --- what we announce ----------------------------------------------------------------

    def _announcement(self) -> Announcement:
        epoch = epoch_of(time.time())
        return Announcement(
            nameplates=tuple(self._invitations.nameplates()),
            # A joiner has nothing to give yet: other joiners must not take it for a source.
            tags=tuple(
                share.tag(epoch)
                for share in self._registry.shares.values()
                if share.state is ShareState.ACTIVE
            ),
        )

    async def refresh(self) -> None:
        """Announce what changed: mDNS TXT, and the signaling topics we listen on."""
        if self._announcer is not None:
            announcement = self._announcement()
            if announcement != self._announced:
                self._announced = announcement
                await self._announcer.update(announcement.encode())
        if self.signal is not None:
            await self.signal.set_topics(self._signal_topics())

    def _signal_topics(self) -> set[str]:
        shares = self._registry.shares.values()
        topics = {member_topic(share.record.secret) for share in shares}
        topics |= {invite_topic(nameplate) for nameplate in self._invitations.nameplates()}
        return topics | set(self._invite_hosts)

    async def tick(self) -> None:
        """Housekeeping each reconcile round: expired invitations are no longer announced."""
        self._invitations.expire()
        await self.refresh()
        await self._announce_presence_when_due()

    async def _announce_presence_when_due(self) -> None:
        """Say we are here on every share's topic, now and then (often while joining)."""
        if self.signal is None:
            return
        joining = any(s.state is ShareState.JOINING for s in self._registry.shares.values())
        interval = JOINING_PRESENCE_INTERVAL_S if joining else PRESENCE_INTERVAL_S
        if time.monotonic() - self._last_presence <= interval:
            return
        self._last_presence = time.monotonic()
        for share in list(self._registry.shares.values()):
            await self.signal.announce(member_topic(share.record.secret))
        stale = time.monotonic() - PRESENCE_TTL_S
        for key, endpoint in list(self.endpoints.items()):
            if endpoint.relay_instance is not None and endpoint.seen < stale:
                del self.endpoints[key]

    def ranks(self, endpoint: Endpoint) -> tuple[str, str] | None:
        """Our name and the endpoint's, as both sides compare them to pick who dials."""
        if endpoint.relay_instance is not None and self.signal is not None:
            return self.signal.instance, endpoint.relay_instance
        if endpoint.announcement is None or self._announcer is None:
            return None
        return self._announcer.name, endpoint.key

    # --- what we learn -------------------------------------------------------------------

    def _share_for_topic(self, topic: str) -> Share | None:
        shares = self._registry.shares.values()
        return next((s for s in shares if member_topic(s.record.secret) == topic), None)

    def _on_presence(self, topic: str, peer: str, addressed: bool) -> None:
        """Another daemon is on one of our topics: remember it, and answer if it asked."""
        assert self.signal is not None
        if topic in self._invite_hosts:
            if addressed and peer not in self._invite_hosts[topic]:
                self._invite_hosts[topic].append(peer)
            return
        if not addressed:
            self._spawn(self.signal.announce(topic, to=peer), "presence reply")
        share = self._share_for_topic(topic)
        if share is None:
            return  # an invitation topic: the joiner dials us, nothing to remember
        key = f"{SIGNAL_PREFIX}{peer}"
        endpoint = self.endpoints.get(key)
        if endpoint is None:
            opener = self._signal_opener(topic, peer)
            endpoint = self.endpoints[key] = Endpoint(key, opener, shares=set())
        assert endpoint.shares is not None
        endpoint.shares.add(share.share_id)
        endpoint.seen = time.monotonic()
        self._poke()

    def _signal_opener(self, topic: str, peer: str) -> PipeOpener:
        async def open_pipe() -> BytePipe:
            assert self.signal is not None
            return self.signal.open_pipe(topic, peer)

        return open_pipe

    def _on_service(self, service: DiscoveredService) -> None:
        if self._announcer is not None and service.name == self._announcer.name:
            return
        if not service.addresses:
            return
        try:
            announcement = Announcement.decode(service.properties)
        except BadMessage as exc:
            logger.info("ignoring the mDNS service %s: %s", service.name, exc)
            return
        opener = lan_opener(service.addresses[0], service.port)
        endpoint = self.endpoints.get(service.name)
        if endpoint is None:
            endpoint = self.endpoints[service.name] = Endpoint(service.name, opener)
        endpoint.open_pipe = opener
        endpoint.announcement = announcement
        endpoint.backoff.retry_now()
        self._poke()

    def _on_service_gone(self, name: str) -> None:
        self.endpoints.pop(name, None)

    # --- invitations we look for ---------------------------------------------------------

    async def look_for_invitation(self, topic: str) -> None:
        """Listen on an invitation's relay topic while we redeem it."""
        if self.signal is not None:
            self._invite_hosts[topic] = []
            await self.refresh()

    async def stop_looking(self, topic: str) -> None:
        self._invite_hosts.pop(topic, None)
        await self.refresh()

    async def ask_for_invitation(self, topic: str) -> None:
        """Ask on the invitation's relay topic who offers it (they answer with presence)."""
        if self.signal is not None:
            await self.signal.announce(topic)

    def endpoints_offering(self, nameplate: str, topic: str) -> Iterator[Endpoint]:
        for endpoint in list(self.endpoints.values()):
            nameplates = endpoint.nameplates
            if nameplates is None or nameplate in nameplates:
                yield endpoint
        for peer in self._invite_hosts.get(topic, []):
            yield Endpoint(f"{SIGNAL_PREFIX}{peer}", self._signal_opener(topic, peer))
