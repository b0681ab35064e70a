"""LAN presence: this daemon on mDNS, and the daemons it meets there.

It owns the mDNS endpoint (one zeroconf instance for the announcer and the browser, see
adapters/mdns.py), our service and its TXT record, and the endpoints other daemons'
services name (written into the shared endpoint table). mDNS starts in the background,
browser first: the daemon answers its CLI at once, and a joiner looks for the sharer's
service while its own is still being announced. If mDNS cannot start (no LAN address yet,
say), it tries again, backing off, until it works; ``error`` says why meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from p2prtc.adapters.mdns import (
    Announcer,
    Browser,
    DiscoveredService,
    Lan,
    lan_addresses,
    new_instance_name,
)
from p2prtc.core.mesh import Backoff
from p2prtc.core.messages import Announcement, BadMessage
from p2prtc.daemon.endpoints import Endpoint, lan_opener

logger = logging.getLogger(__name__)


class LanPresence:
    """Our mDNS service announced, and the services of others as endpoints."""

    def __init__(
        self,
        interfaces: list[str] | None,
        endpoints: dict[str, Endpoint],
        *,
        poke: Callable[[], None],
    ) -> None:
        self._configured_interfaces = interfaces
        self._endpoints = endpoints
        self._poke = poke
        self.name = new_instance_name()  # known before browsing: our own is skipped
        self.error: str | None = None
        self._lan: Lan | None = None
        self._announcer: Announcer | None = None
        self._browser: Browser | None = None
        self._announced = Announcement()
        self._start: asyncio.Task[None] | None = None

    def interfaces(self) -> list[str]:
        """The addresses mDNS runs on: the configured ones, else the machine's now."""
        return self._configured_interfaces or lan_addresses()

    def start(self, rendezvous_port: int, announcement: Callable[[], Announcement]) -> None:
        """Start in the background; ``announcement`` gives what to announce at that time."""
        self._start = asyncio.create_task(self._keep_trying(rendezvous_port, announcement))

    async def _keep_trying(
        self, rendezvous_port: int, announcement: Callable[[], Announcement]
    ) -> None:
        backoff = Backoff()
        while not await self._try_start(rendezvous_port, announcement()):
            backoff.failed(time.monotonic())
            delay = backoff.next_attempt - time.monotonic()
            logger.error("%s; trying again in %.0f s", self.error, delay)
            await asyncio.sleep(delay)
        if backoff.failures:
            logger.info("LAN discovery (mDNS) works now")
        await self.announce(announcement())  # what changed while the first went out

    async def _try_start(self, rendezvous_port: int, announcement: Announcement) -> bool:
        interfaces = self.interfaces()
        if not interfaces:
            self.error = "LAN discovery (mDNS) waits: this machine has no LAN address yet"
            return False
        try:
            self._lan = Lan.open(interfaces)
            self._browser = await Browser.start(self._lan, self._on_service, self._on_service_gone)
            logger.debug("mDNS browsing on %s", interfaces)
            announcer = await Announcer.start(
                self._lan, rendezvous_port, announcement.encode(), self.name
            )
        except Exception as exc:  # the daemon keeps serving: static peers, relays, status
            self.error = f"LAN discovery (mDNS) failed: {exc}"
            await self._close_endpoint()
            return False
        self.error = None
        self._announcer, self._announced = announcer, announcement
        return True

    async def announce(self, announcement: Announcement) -> None:
        """Update our TXT record if it changed (nothing before mDNS has started)."""
        if self._announcer is not None and announcement != self._announced:
            self._announced = announcement
            await self._announcer.update(announcement.encode())

    def look_again(self) -> None:
        """Someone waits for an endpoint (a join): ask the LAN now."""
        if self._browser is not None:
            self._browser.ask_now()

    async def close(self) -> None:
        if self._start is not None:
            self._start.cancel()
            with contextlib.suppress(BaseException):
                await self._start
        await self._close_endpoint()

    async def _close_endpoint(self) -> None:
        for closer in (self._announcer, self._browser, self._lan):
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer.close()
        self._announcer = self._browser = self._lan = None

    def _on_service(self, service: DiscoveredService) -> None:
        if service.name == self.name or not service.addresses:
            return
        try:
            announcement = Announcement.decode(service.properties)
        except BadMessage as exc:
            logger.info("ignoring the mDNS service %s: %s", service.name, exc)
            return
        logger.debug("mDNS: %s at %s offers %s", service.name, service.addresses, announcement)
        opener = lan_opener(service.addresses[0], service.port)
        endpoint = self._endpoints.get(service.name)
        if endpoint is None:
            endpoint = self._endpoints[service.name] = Endpoint(service.name, opener)
        endpoint.open_pipe = opener
        endpoint.address = f"{service.addresses[0]}:{service.port}"
        endpoint.announcement = announcement
        endpoint.backoff.retry_now()
        self._poke()

    def _on_service_gone(self, name: str) -> None:
        self._endpoints.pop(name, None)
