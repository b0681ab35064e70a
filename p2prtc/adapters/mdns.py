"""LAN discovery over mDNS/DNS-SD with zeroconf: announce this daemon, browse for others.

Each daemon announces one `_p2prtc._tcp.local.` service: the address and port of its
rendezvous WebSocket, and TXT properties chosen by the daemon (protocol version, open
invitations' nameplates, opaque share tags). The instance name is random for each run,
so nothing identifies the user or the files.

The instance name is known before the service is registered (`new_instance_name`), so a
daemon can browse first and still recognise its own service. Registration skips zeroconf's
name probing (RFC 6762 section 8.1: three queries 250-500 ms apart, about 1.2 s before the
first announcement): the names are 48 random bits, so two daemons picking the same one is
not a case to wait for, and a daemon must be findable as soon as it runs.

Interfaces are always explicit IPv4 addresses: zeroconf sends and joins the multicast
group on those only (`Zeroconf(interfaces=[...])`), and the announced addresses are the
same. Tests pass 127.0.0.1 or a test namespace's address; the daemon passes
`lan_addresses()`. Sockets still bind 0.0.0.0:5353 to receive (as every mDNS stack does),
which is why tests run mDNS inside network namespaces that they create.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import ifaddr
from zeroconf import (  # type: ignore[attr-defined]  # public names, missing from __all__
    DNSOutgoing,
    DNSQuestion,
    DNSQuestionType,
    IPVersion,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf import (
    Error as ZeroconfError,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from p2prtc.errors import P2PError

logger = logging.getLogger(__name__)

SERVICE_TYPE = "_p2prtc._tcp.local."
# A TXT string holds at most 255 bytes; keeping the whole record small keeps an
# announcement in one packet.
MAX_TXT_ENTRY = 255
MAX_TXT_TOTAL = 1300
RESOLVE_TIMEOUT_MS = 3000
# DNS constants for a query of our own (zeroconf keeps its own private).
_QUERY_FLAGS = 0x0000
_TYPE_PTR = 12
_CLASS_IN = 1


class DiscoveryError(P2PError):
    """Local network discovery (mDNS) failed."""


@dataclass(frozen=True)
class DiscoveredService:
    """Another daemon as announced: where its rendezvous listens, and its TXT properties."""

    name: str
    addresses: list[str]
    port: int
    properties: dict[str, str]


def lan_addresses() -> list[str]:
    """This machine's IPv4 addresses except loopback and link-local: the daemon's default."""
    found = {
        ip.ip
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
        if isinstance(ip.ip, str) and _is_lan_address(ipaddress.IPv4Address(ip.ip))
    }
    return sorted(found)


def _is_lan_address(address: ipaddress.IPv4Address) -> bool:
    return not (address.is_loopback or address.is_link_local or address.is_unspecified)


def _checked_interfaces(interfaces: list[str]) -> list[str]:
    """Specific IPv4 addresses only: an empty list or 0.0.0.0 would mean "every interface"."""
    if not interfaces:
        raise ValueError("name at least one interface address")
    for interface in interfaces:
        address = ipaddress.ip_address(interface)  # ValueError for names like "eth0"
        if address.version != 4 or address.is_unspecified:
            raise ValueError(f"not a specific IPv4 interface address: {interface}")
    return list(interfaces)


def _checked_properties(properties: Mapping[str, str]) -> dict[str, str]:
    sizes = [len(f"{key}={value}".encode()) for key, value in properties.items()]
    for key, size in zip(properties, sizes, strict=True):
        if not key or "=" in key or size > MAX_TXT_ENTRY:
            raise ValueError(f"bad TXT property {key!r} ({size} bytes)")
    if sum(sizes) + len(sizes) > MAX_TXT_TOTAL:
        raise ValueError(f"TXT properties too large ({sum(sizes)} bytes)")
    return dict(properties)


def _open_zeroconf(interfaces: list[str]) -> AsyncZeroconf:
    try:
        return AsyncZeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
    except OSError as exc:
        raise DiscoveryError(str(exc)) from exc


def new_instance_name() -> str:
    """A fresh random service instance name (the full name, as browsers report it)."""
    return f"p2prtc-{secrets.token_hex(6)}.{SERVICE_TYPE}"


class Announcer:
    """Announces this daemon's rendezvous address and properties until closed."""

    def __init__(self, azc: AsyncZeroconf, info: AsyncServiceInfo) -> None:
        self._azc = azc
        self._info = info

    @classmethod
    async def start(
        cls,
        interfaces: list[str],
        port: int,
        properties: Mapping[str, str],
        name: str | None = None,
    ) -> Announcer:
        """Register the service on `interfaces` (announcing those addresses and `port`)
        under `name` (from `new_instance_name`; a fresh one by default)."""
        addresses = _checked_interfaces(interfaces)
        name = name or new_instance_name()
        instance = name.removesuffix(f".{SERVICE_TYPE}")
        info = AsyncServiceInfo(
            SERVICE_TYPE,
            name,
            port=port,
            properties=_checked_properties(properties),
            server=f"{instance}.local.",
            parsed_addresses=addresses,
        )
        azc = _open_zeroconf(addresses)
        try:
            # No probing (random names, see the module docstring): the first announcement
            # goes out at once; this returns after the last of its three repetitions.
            await (await azc.async_register_service(info, cooperating_responders=True))
        except ZeroconfError as exc:
            await azc.async_close()
            raise DiscoveryError(str(exc)) from exc
        except asyncio.CancelledError:  # the daemon stops while we announce: no leftovers
            await azc.async_close()
            raise
        logger.info("announcing %s on %s port %d", info.name, addresses, port)
        return cls(azc, info)

    @property
    def name(self) -> str:
        """The service instance name (what browsers report, also this daemon's own)."""
        return self._info.name

    async def update(self, properties: Mapping[str, str]) -> None:
        """Replace the TXT properties; browsers see the change."""
        self._info = AsyncServiceInfo(
            SERVICE_TYPE,
            self._info.name,
            port=self._info.port,
            properties=_checked_properties(properties),
            server=self._info.server,
            parsed_addresses=self._info.parsed_addresses(IPVersion.V4Only),
        )
        await (await self._azc.async_update_service(self._info))

    async def close(self) -> None:
        """Withdraw the service (browsers see it removed) and close the sockets."""
        await (await self._azc.async_unregister_service(self._info))
        await self._azc.async_close()


OnChange = Callable[[DiscoveredService], None]
OnRemove = Callable[[str], None]


class Browser:
    """Reports daemons appearing or changing (`on_change`) and leaving (`on_remove`).

    A daemon's own announcement is reported too: compare with `Announcer.name`. A daemon
    that vanishes without withdrawing is removed when its records expire (minutes).
    """

    def __init__(self, azc: AsyncZeroconf, on_change: OnChange, on_remove: OnRemove) -> None:
        self._azc = azc
        self._on_change = on_change
        self._on_remove = on_remove
        self._known: dict[str, DiscoveredService] = {}
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._browser: AsyncServiceBrowser | None = None

    @classmethod
    async def start(
        cls, interfaces: list[str], on_change: OnChange, on_remove: OnRemove
    ) -> Browser:
        """Start browsing on `interfaces`; callbacks run in the event loop."""
        browser = cls(_open_zeroconf(_checked_interfaces(interfaces)), on_change, on_remove)
        browser._browser = AsyncServiceBrowser(
            browser._azc.zeroconf, SERVICE_TYPE, handlers=[browser._on_state_change]
        )
        return browser

    def _on_state_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        # zeroconf calls handlers by these keyword names, so the signature is fixed.
        previous = self._resolving.pop(name, None)
        if previous is not None:
            previous.cancel()  # a newer event supersedes it: resolve from the fresh cache
        if state_change is ServiceStateChange.Removed:
            if self._known.pop(name, None) is not None:
                self._on_remove(name)
            return
        self._resolving[name] = asyncio.ensure_future(self._resolve(name))

    def ask_now(self) -> None:
        """Ask the LAN for every daemon's service now, for a unicast answer: someone is
        waiting (a join), and zeroconf's own next query may be a second away."""
        question = DNSQuestion(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN)
        question.unicast = True
        query = DNSOutgoing(_QUERY_FLAGS)
        query.add_question(question)
        self._azc.zeroconf.async_send(query)

    async def _resolve(self, name: str) -> None:
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        # Asked for a unicast answer (QU): a responder multicasts a record at most once a
        # second (RFC 6762 section 6), so just after it re-announced (a new invitation) a
        # multicast question waited up to 1 s; a unicast answer is not rate limited.
        if not await info.async_request(
            self._azc.zeroconf, RESOLVE_TIMEOUT_MS, question_type=DNSQuestionType.QU
        ):
            logger.debug("could not resolve %s", name)
            return
        service = _discovered(info)
        if self._known.get(name) != service:
            self._known[name] = service
            self._on_change(service)
        self._resolving.pop(name, None)

    async def close(self) -> None:
        """Stop browsing; no callback runs afterwards."""
        if self._browser is not None:
            await self._browser.async_cancel()
        for task in self._resolving.values():
            task.cancel()
        self._resolving.clear()
        await self._azc.async_close()


def _discovered(info: AsyncServiceInfo) -> DiscoveredService:
    properties = {key: value or "" for key, value in info.decoded_properties.items()}
    return DiscoveredService(
        name=info.name,
        addresses=info.parsed_addresses(IPVersion.V4Only),
        port=info.port or 0,
        properties=properties,
    )
