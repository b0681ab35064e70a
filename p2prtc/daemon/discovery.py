"""Discovery: what this daemon announces, and the endpoints it learns.

It owns the endpoint table (static peers from the configuration, and what the LAN
presence of ``lan_presence.py`` (mDNS) and the relay presence of ``relay_presence.py``
write into it) and what we announce on both. The dialer reads the table; each round,
``tick`` refreshes what we announce.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator

from p2prtc.core.keys import epoch_of
from p2prtc.core.messages import Announcement
from p2prtc.daemon.config import DaemonConfig
from p2prtc.daemon.endpoints import Endpoint, lan_opener
from p2prtc.daemon.invitations import Invitations
from p2prtc.daemon.lan_presence import LanPresence
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
        self.lan = LanPresence(config.interfaces, self.endpoints, poke=poke)
        self._registry = registry
        self._invitations = invitations
        self._poke = poke
        self._static_peers: list[str] = []

    async def start(self, rendezvous_port: int) -> None:
        for host, port in self.config.peers:
            self.add_peer(host, port)
        await self.relay.start()
        if self.config.mdns:
            self.lan.start(rendezvous_port, self._announcement)

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

    def search_plan(self) -> SearchPlan:
        """What a join searches with now (told to the user)."""
        return SearchPlan(
            mdns=self.lan.interfaces() if self.config.mdns else [],
            mdns_error=self.lan.error,
            relays=self.relay.status(),
            peers=list(self._static_peers),
        )

    async def close(self) -> None:
        await self.lan.close()
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
        await self.lan.announce(self._announcement())
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
        return self.lan.name, endpoint.key

    def endpoints_offering(self, nameplate: str, topic: str) -> Iterator[Endpoint]:
        """Where an invitation may be redeemed: LAN daemons announcing its nameplate (or
        announcing nothing: static peers), then relay daemons that answered on its topic."""
        for endpoint in list(self.endpoints.values()):
            nameplates = endpoint.nameplates
            if nameplates is None or nameplate in nameplates:
                yield endpoint
        yield from self.relay.invitation_hosts(topic)
