"""Endpoints: the other daemons we know how to reach (mDNS, a static address, relay presence).

An endpoint owns what we learnt about one daemon (its announcement or the shares its relay
topics prove) and when we may dial it again; the dialer decides whether to.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from p2prtc.adapters.rendezvous import connect_pipe
from p2prtc.core.keys import matches_share_tag
from p2prtc.core.mesh import Backoff
from p2prtc.core.messages import Announcement
from p2prtc.daemon.pipes import HANDSHAKE_TIMEOUT_S, BytePipe

PipeOpener = Callable[[], Awaitable[BytePipe]]
SIGNAL_PREFIX = "signal:"


class Endpoint:
    """Another daemon we can dial: from mDNS, a static address, or signaling presence."""

    def __init__(
        self,
        key: str,
        opener: PipeOpener,
        announcement: Announcement | None = None,
        shares: set[bytes] | None = None,
        address: str | None = None,
    ) -> None:
        self.key = key
        self.open_pipe = opener
        self.address = address  # host:port on the LAN; None for one met on a relay
        self.announcement = announcement  # its mDNS TXT; None when nothing was announced
        self.shares = shares  # the shares a signaling topic proves it holds
        self.peer_id: str | None = None  # learnt from the first successful handshake
        self.seen = time.monotonic()
        self.backoff = Backoff()
        self.dialling = False

    @property
    def relay_instance(self) -> str | None:
        """The peer's instance id on the signaling relays, for an endpoint found there."""
        return self.key.removeprefix(SIGNAL_PREFIX) if self.key.startswith(SIGNAL_PREFIX) else None

    @property
    def where(self) -> str:
        """Where it is, for the user: its address, or the relay it was met on."""
        return self.address or ("a signaling relay" if self.relay_instance else self.key)

    @property
    def nameplates(self) -> set[str] | None:
        if self.announcement is None:
            return None if self.shares is None else set()
        return set(self.announcement.nameplates)

    def may_hold(self, share_id: bytes, secret: bytes, epoch: int) -> bool:
        if self.shares is not None:
            return share_id in self.shares
        if self.announcement is None:
            return True
        announced = (*self.announcement.tags, *self.announcement.retired)
        return any(matches_share_tag(secret, tag, epoch) for tag in announced)

    def retired(self, secret: bytes, epoch: int) -> bool:
        """Whether it announces ``secret`` as one its share rotated away: it will never dial
        us for it, so we dial (to be told we were cut off), whoever's turn it would be."""
        retired = self.announcement.retired if self.announcement is not None else ()
        return any(matches_share_tag(secret, tag, epoch) for tag in retired)


def lan_opener(host: str, port: int) -> PipeOpener:
    async def open_pipe() -> BytePipe:
        return await connect_pipe(host, port, HANDSHAKE_TIMEOUT_S)

    return open_pipe
