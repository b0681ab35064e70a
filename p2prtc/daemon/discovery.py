"""Discovery: what this daemon announces, and the endpoints it learns.

It owns the endpoint table (static peers from the configuration, mDNS services, and the
relay presence of ``relay_presence.py``) and the mDNS announcer and browser. The dialer
reads the table; each round, ``tick`` refreshes what we announce.

mDNS starts in the background, browser first: the daemon answers its CLI at once, and a
joiner looks for the sharer's service while its own is still being announced (it needs
no announcement of its own to find the sharer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator

from p2prtc.adapters.mdns import (
    Announcer,
    Browser,
    DiscoveredService,
    Lan,
    lan_addresses,
    new_instance_name,
)
from p2prtc.core.keys import epoch_of
from p2prtc.core.mesh import Backoff
from p2prtc.core.messages import Announcement, BadMessage
from p2prtc.daemon.config import DaemonConfig
from p2prtc.daemon.endpoints import Endpoint, lan_opener
from p2prtc.daemon.invitations import Invitations
from p2prtc.daemon.registry import Registry
from p2prtc.daemon.relay_presence import RelayPresence
from p2prtc.daemon.search import SearchPlan
from p2prtc.daemon.share import ShareState
from p2prtc.daemon.signal_pipes import OnPipe

logger = logging.getLogger(__name__)


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
    ) -> None:
        self.config = config
        self.endpoints: dict[str, Endpoint] = {}
        self.relay = RelayPresence(
            config.signal_urls,
            registry,
            invitations,
            self.endpoints,
            on_pipe=on_pipe,
            poke=poke,
        )
        self._registry = registry
        self._invitations = invitations
        self._poke = poke
        self._lan: Lan | None = None  # one mDNS endpoint for both (see adapters/mdns.py)
        self._announcer: Announcer | None = None
        self._browser: Browser | None = None
        self._announced = Announcement()
        self._mdns_name = new_instance_name()  # known before browsing: our own is skipped
        self._mdns_start: asyncio.Task[None] | None = None
        self.mdns_error: str | None = None
        self._static_peers: list[str] = []

    async def start(self, rendezvous_port: int) -> None:
        for host, port in self.config.peers:
            self.add_peer(host, port)
        await self.relay.start()
        if self.config.mdns:
            self._mdns_start = asyncio.create_task(self._start_mdns(rendezvous_port))

    def add_peer(self, host: str, port: int) -> str | None:
        """Dial ``host:port`` like any endpoint (P2PRTC_PEERS, ``--peer``); its key, or None
        when it is known already."""
        key = f"{host}:{port}"
        if key in self.endpoints:
            return None
        self.endpoints[key] = Endpoint(key, lan_opener(host, port), address=key)
        self._static_peers.append(key)
        self._poke()
        return key

    def settings(self) -> dict[str, object]:
        """The settings this daemon runs with (no secret), static peers as they are now."""
        return {**self.config.report(), "peers": list(self._static_peers)}

    def _mdns_interfaces(self) -> list[str]:
        return self.config.interfaces or lan_addresses()

    def search_plan(self) -> SearchPlan:
        """What a join searches with now (told to the user)."""
        return SearchPlan(
            mdns=self._mdns_interfaces() if self.config.mdns else [],
            mdns_error=self.mdns_error,
            relays=self.relay.status(),
            peers=list(self._static_peers),
        )

    async def _start_mdns(self, rendezvous_port: int) -> None:
        """Start mDNS; after a failure (the interface not up yet, say) try again, backing
        off, until it works: the daemon serves static peers and relays meanwhile."""
        backoff = Backoff()
        while not await self._try_mdns(rendezvous_port):
            backoff.failed(time.monotonic())
            delay = backoff.next_attempt - time.monotonic()
            logger.error("%s; trying again in %.0f s", self.mdns_error, delay)
            await asyncio.sleep(delay)
        if backoff.failures:
            logger.info("LAN discovery (mDNS) works now")
        await self.refresh()  # what changed while the first announcement went out

    async def _try_mdns(self, rendezvous_port: int) -> bool:
        interfaces = self._mdns_interfaces()
        if not interfaces:
            self.mdns_error = "LAN discovery (mDNS) waits: this machine has no LAN address yet"
            return False
        try:
            self._lan = Lan.open(interfaces)
            self._browser = await Browser.start(self._lan, self._on_service, self._on_service_gone)
            logger.debug("mDNS browsing on %s", interfaces)
            announced = self._announcement()
            announcer = await Announcer.start(
                self._lan, rendezvous_port, announced.encode(), self._mdns_name
            )
        except Exception as exc:  # the daemon keeps serving: static peers, relays, status
            self.mdns_error = f"LAN discovery (mDNS) failed: {exc}"
            await self._close_mdns()
            return False
        self.mdns_error = None
        self._announcer, self._announced = announcer, announced
        return True

    async def _close_mdns(self) -> None:
        for closer in (self._announcer, self._browser, self._lan):
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer.close()
        self._announcer = self._browser = self._lan = None

    async def close(self) -> None:
        if self._mdns_start is not None:
            self._mdns_start.cancel()
            with contextlib.suppress(BaseException):
                await self._mdns_start
        await self._close_mdns()
        if self.relay.hub is not None:
            with contextlib.suppress(Exception):
                await self.relay.hub.close()

    # --- what we announce ----------------------------------------------------------------

    def _announcement(self) -> Announcement:
        epoch = epoch_of(time.time())
        active = [s for s in self._registry.shares.values() if s.state is ShareState.ACTIVE]
        return Announcement(
            nameplates=tuple(self._invitations.nameplates()),
            # A joiner has nothing to give yet: other joiners must not take it for a source.
            tags=tuple(share.tag(epoch) for share in active),
            retired=tuple(tag for share in active for tag in share.retired_tags(epoch)),
        )

    async def refresh(self) -> None:
        """Announce what changed: mDNS TXT, and the signaling topics we listen on."""
        if self._announcer is not None:
            announcement = self._announcement()
            if announcement != self._announced:
                self._announced = announcement
                await self._announcer.update(announcement.encode())
        await self.relay.set_topics()

    async def tick(self) -> None:
        """Housekeeping each reconcile round: expired invitations are no longer announced."""
        self._invitations.expire()
        await self.refresh()
        await self.relay.announce_when_due()

    def ranks(self, endpoint: Endpoint) -> tuple[str, str] | None:
        """Our name and the endpoint's, as both sides compare them to pick who dials."""
        if endpoint.relay_instance is not None and self.relay.hub is not None:
            return self.relay.hub.instance, endpoint.relay_instance
        if endpoint.announcement is None:
            return None
        return self._mdns_name, endpoint.key

    # --- what we learn -------------------------------------------------------------------

    def _on_service(self, service: DiscoveredService) -> None:
        if service.name == self._mdns_name:
            return
        if not service.addresses:
            return
        try:
            announcement = Announcement.decode(service.properties)
        except BadMessage as exc:
            logger.info("ignoring the mDNS service %s: %s", service.name, exc)
            return
        logger.debug("mDNS: %s at %s offers %s", service.name, service.addresses, announcement)
        opener = lan_opener(service.addresses[0], service.port)
        endpoint = self.endpoints.get(service.name)
        if endpoint is None:
            endpoint = self.endpoints[service.name] = Endpoint(service.name, opener)
        endpoint.open_pipe = opener
        endpoint.address = f"{service.addresses[0]}:{service.port}"
        endpoint.announcement = announcement
        endpoint.backoff.retry_now()
        self._poke()

    def _on_service_gone(self, name: str) -> None:
        self.endpoints.pop(name, None)

    def look_again(self) -> None:
        """Someone waits for an endpoint (a join): ask the LAN now."""
        if self._browser is not None:
            self._browser.ask_now()

    def endpoints_offering(self, nameplate: str, topic: str) -> Iterator[Endpoint]:
        """Where an invitation may be redeemed: LAN daemons announcing its nameplate (or
        announcing nothing: static peers), then relay daemons that answered on its topic."""
        for endpoint in list(self.endpoints.values()):
            nameplates = endpoint.nameplates
            if nameplates is None or nameplate in nameplates:
                yield endpoint
        yield from self.relay.invitation_hosts(topic)
