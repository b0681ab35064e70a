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

A daemon opens one `Lan` (zeroconf's sockets and record cache) and announces and browses
through it. Two zeroconf instances in one network namespace would both bind port 5353 with
SO_REUSEPORT, and the kernel hands each unicast datagram to one socket of such a group only
(by a hash of the addresses: always the same one for a given sender): the unicast answers
to the browser's questions (QU, asked so that an answer is not rate limited) landed in the
announcer's instance for about one sender in two, and that browser never saw them.

A browser reports a service again whenever a record of it arrives, changed or not, and
takes the TXT record received last: zeroconf fires its own "updated" event only for a
record its cache does not hold (an announcement going back to properties seen a few
seconds earlier is not one), and its cache may hold the old and the new TXT record side by
side (both kept when received within a second of each other, RFC 6762 section 10.2). An
announcer repeats an update once more after zeroconf's answer delays (up to 1.3 s: an
answer to a question that came in just before the update was queued with the old record),
so the last TXT record a browser receives is the current one.

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
    DNSText,
    IPVersion,
    RecordUpdate,
    RecordUpdateListener,
    ServiceStateChange,
    Zeroconf,
    current_time_millis,
)
from zeroconf import (
    Error as ZeroconfError,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from p2prtc.errors import P2PError, describe

logger = logging.getLogger(__name__)

SERVICE_TYPE = "_p2prtc._tcp.local."
# A TXT string holds at most 255 bytes; keeping the whole record small keeps an
# announcement in one packet.
MAX_TXT_ENTRY = 255
MAX_TXT_TOTAL = 1300
RESOLVE_TIMEOUT_MS = 3000
# An update is announced once more this long after its three announcements (0.45 s): past
# the longest a responder holds a queued multicast answer (1 s rate limit + 120 ms random
# delay + 200 ms aggregation), so no answer with the old TXT can arrive after it.
LAST_WORD_DELAY_S = 1.5
# DNS constants for a query of our own (zeroconf keeps its own private).
_QUERY_FLAGS = 0x0000
_TYPE_PTR = 12
_TYPE_SRV = 33
_TYPE_TXT = 16
_CLASS_IN = 1
_SERVICE_RECORD_TYPES = (_TYPE_SRV, _TYPE_TXT)


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


def checked_properties(properties: Mapping[str, str]) -> dict[str, str]:
    """`properties` if they fit a TXT record (one packet); ValueError otherwise."""
    sizes = [len(f"{key}={value}".encode()) for key, value in properties.items()]
    for key, size in zip(properties, sizes, strict=True):
        if not key or "=" in key or size > MAX_TXT_ENTRY:
            raise ValueError(f"bad TXT property {key!r} ({size} bytes)")
    if sum(sizes) + len(sizes) > MAX_TXT_TOTAL:
        raise ValueError(f"TXT properties too large ({sum(sizes)} bytes)")
    return dict(properties)


class Lan:
    """One mDNS endpoint (sockets on explicit IPv4 interfaces, and a record cache) that an
    announcer and a browser share: one per daemon (see the module docstring)."""

    def __init__(self, azc: AsyncZeroconf, interfaces: list[str]) -> None:
        self.azc = azc
        self.interfaces = interfaces

    @classmethod
    def open(cls, interfaces: list[str]) -> Lan:
        """Open the sockets on `interfaces` (specific IPv4 addresses; ValueError otherwise)."""
        addresses = _checked_interfaces(interfaces)
        try:
            return cls(AsyncZeroconf(interfaces=addresses, ip_version=IPVersion.V4Only), addresses)
        except OSError as exc:
            raise DiscoveryError(describe(exc)) from exc

    async def close(self) -> None:
        """Close the sockets; close the announcer and browser on it first."""
        await self.azc.async_close()


def new_instance_name() -> str:
    """A fresh random service instance name (the full name, as browsers report it)."""
    return f"p2prtc-{secrets.token_hex(6)}.{SERVICE_TYPE}"


class Announcer:
    """Announces this daemon's rendezvous address and properties until closed."""

    def __init__(self, azc: AsyncZeroconf, info: AsyncServiceInfo) -> None:
        self._azc = azc
        self._info = info
        self._last_word: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls,
        lan: Lan,
        port: int,
        properties: Mapping[str, str],
        name: str | None = None,
    ) -> Announcer:
        """Register the service on `lan` (announcing its addresses and `port`) under `name`
        (from `new_instance_name`; a fresh one by default)."""
        addresses = lan.interfaces
        name = name or new_instance_name()
        instance = name.removesuffix(f".{SERVICE_TYPE}")
        info = AsyncServiceInfo(
            SERVICE_TYPE,
            name,
            port=port,
            properties=checked_properties(properties),
            server=f"{instance}.local.",
            parsed_addresses=addresses,
        )
        try:
            # No probing (random names, see the module docstring): the first announcement
            # goes out at once; this returns after the last of its three repetitions.
            await (await lan.azc.async_register_service(info, cooperating_responders=True))
        except ZeroconfError as exc:
            raise DiscoveryError(describe(exc)) from exc
        logger.info("announcing %s on %s port %d", info.name, addresses, port)
        return cls(lan.azc, info)

    @property
    def name(self) -> str:
        """The service instance name (what browsers report, also this daemon's own)."""
        return self._info.name

    async def update(self, properties: Mapping[str, str]) -> None:
        """Replace the TXT properties; browsers see the change (the last word comes
        `LAST_WORD_DELAY_S` later, see the module docstring)."""
        self._info = AsyncServiceInfo(
            SERVICE_TYPE,
            self._info.name,
            port=self._info.port,
            properties=checked_properties(properties),
            server=self._info.server,
            parsed_addresses=self._info.parsed_addresses(IPVersion.V4Only),
        )
        await (await self._azc.async_update_service(self._info))
        if self._last_word is not None:
            self._last_word.cancel()  # a later update has the last word
        self._last_word = asyncio.ensure_future(self._announce_last_word())

    async def _announce_last_word(self) -> None:
        await asyncio.sleep(LAST_WORD_DELAY_S)
        zeroconf = self._azc.zeroconf
        zeroconf.async_send(zeroconf.generate_service_broadcast(self._info, None))

    async def close(self) -> None:
        """Withdraw the service (browsers see it removed)."""
        if self._last_word is not None:
            self._last_word.cancel()
        await (await self._azc.async_unregister_service(self._info))


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
        self._arrivals = _RecordArrivals(self._known, self._resolve_soon)

    @classmethod
    async def start(cls, lan: Lan, on_change: OnChange, on_remove: OnRemove) -> Browser:
        """Start browsing on `lan`; callbacks run in the event loop."""
        browser = cls(lan.azc, on_change, on_remove)
        browser._azc.zeroconf.async_add_listener(browser._arrivals, None)
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
        if state_change is ServiceStateChange.Removed:
            self._cancel_resolve(name)
            if self._known.pop(name, None) is not None:
                self._on_remove(name)
            return
        self._resolve_soon(name)

    def _resolve_soon(self, name: str) -> None:
        # A newer event supersedes a resolve in flight: resolve from the fresh cache.
        self._cancel_resolve(name)
        self._resolving[name] = asyncio.ensure_future(self._resolve(name))

    def _cancel_resolve(self, name: str) -> None:
        previous = self._resolving.pop(name, None)
        if previous is not None:
            previous.cancel()

    def ask_now(self) -> None:
        """Ask the LAN for every daemon's service now, for a unicast answer: someone is
        waiting (a join), and zeroconf's own next query may be a second away. The answers
        refresh every daemon already known too (its current TXT record)."""
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
        resolved = await info.async_request(
            self._azc.zeroconf, RESOLVE_TIMEOUT_MS, question_type=DNSQuestionType.QU
        )
        del self._resolving[name]  # still ours: a superseded resolve was cancelled
        if not resolved:
            logger.debug("could not resolve %s", name)
            return
        service = _discovered(info, _newest_properties(self._azc.zeroconf, name))
        if self._known.get(name) != service:
            self._known[name] = service
            self._on_change(service)

    async def close(self) -> None:
        """Stop browsing; no callback runs afterwards."""
        self._azc.zeroconf.async_remove_listener(self._arrivals)
        if self._browser is not None:
            await self._browser.async_cancel()
        for task in self._resolving.values():
            task.cancel()
        self._resolving.clear()


class _RecordArrivals(RecordUpdateListener):
    """Calls `resolve(name)` for each known service whose SRV or TXT record arrived, new or
    not: zeroconf's browser reports only records its cache did not hold."""

    def __init__(
        self, known: Mapping[str, DiscoveredService], resolve: Callable[[str], None]
    ) -> None:
        super().__init__()
        self._known = known
        self._resolve = resolve
        self._arrived: set[str] = set()

    def async_update_records(self, zc: Zeroconf, now: float, records: list[RecordUpdate]) -> None:
        for update in records:
            record = update.new
            if record.type in _SERVICE_RECORD_TYPES and record.ttl and record.name in self._known:
                self._arrived.add(record.name)

    def async_update_records_complete(self) -> None:
        # Called once the cache holds the records: a resolve now reads them.
        for name in self._arrived:
            self._resolve(name)
        self._arrived.clear()


def _newest_properties(zeroconf: Zeroconf, name: str) -> dict[str, str]:
    """The properties of `name`'s TXT record received last. zeroconf's cache may hold an
    older one beside it (see the module docstring) and reads whichever it stored last."""
    now = current_time_millis()
    texts = [
        record
        for record in zeroconf.cache.async_all_by_details(name, _TYPE_TXT, _CLASS_IN)
        # ttl 1: an older record that a newer one superseded (RFC 6762 section 10.2)
        if isinstance(record, DNSText) and record.ttl > 1 and not record.is_expired(now)
    ]
    newest = max(texts, key=lambda record: record.created)  # resolved: one at least
    raw = AsyncServiceInfo(SERVICE_TYPE, name, properties=newest.text).decoded_properties
    return {key: value or "" for key, value in raw.items()}


def _discovered(info: AsyncServiceInfo, properties: dict[str, str]) -> DiscoveredService:
    return DiscoveredService(
        name=info.name,
        addresses=info.parsed_addresses(IPVersion.V4Only),
        port=info.port or 0,
        properties=properties,
    )
