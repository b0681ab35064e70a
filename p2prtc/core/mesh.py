"""The mesh's pure rules: which side dials, whom a full listener still admits (and which link
it sheds for a newcomer), which duplicate connection wins (and which may claim an id at
all), backoff, relay.

The daemon's dialer and registry apply these; ``scripts/sim_mesh.py`` runs the same relay
rule at scale. Time and randomness are arguments, so a seeded replay decides the same way.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import TypeVar

# A failed attempt waits 0.5 s * 2**failures, at most this long.
MAX_BACKOFF_S = 30.0
# A daemon that refused us for having as many connections as it accepts: tried again after
# about this long (not a failure: it backs off no further, and other members are tried).
BUSY_RETRY_S = 2.0
# A connection that ends sooner than this counts as a failed attempt (backing off), so a
# peer that keeps dropping us right away is not redialled in a tight loop.
STABLE_CONNECTION_S = 10.0
# A member whose links to a share all dropped waits this long for the side its names order
# makes dial before it dials as a newcomer: both ends of a dropped link are left without one,
# and both dialling at once would make a duplicate link, closed as soon as it opens.
PEERLESS_GRACE_S = 3.0
# Connections a listener accepts beyond its bound for newcomers (members with no link to a
# share yet).
JOINER_ALLOWANCE = 1
# Rendezvous pipes still in their handshake, in all and from one source address.
MAX_HANDSHAKES = 64
MAX_PER_SOURCE = 8

Peer = TypeVar("Peer")


def should_dial(
    *,
    newcomer: bool,
    open_connections: int,
    dials_in_progress: int,
    max_peers: int,
    ranks: tuple[str, str] | None,
) -> bool:
    """Whether we dial a daemon that may hold one of our shares (else we wait for its call).

    A newcomer (we hold a share that no open link carries: a joiner waiting for its content,
    or a member whose links all dropped) dials every member it finds at once (the first to
    answer hands the share over), up to the bound a listener accepts; past it, one at a
    time, so links held for other shares never lock it out. Past ``max_peers`` connections
    nobody new is dialled: shares then reach further members by gossip over the partial
    mesh. Otherwise one side dials, the one whose announced name (``ranks``: ours, theirs)
    sorts first; without names to compare (a static address) we dial.
    """
    if newcomer:
        return dials_in_progress == 0 or open_connections < member_bound(max_peers, joining=True)
    if open_connections >= max_peers:
        return False
    if ranks is None:
        return True
    ours, theirs = ranks
    return ours < theirs


def is_newcomer(*, joining: bool, peerless_for_s: float | None) -> bool:
    """Whether we dial a share's members as a newcomer (see ``should_dial``):
    ``peerless_for_s``, how long no open link has carried the share (None: one does).

    A joiner is one at once; a member whose links dropped, after ``PEERLESS_GRACE_S``
    (until then the name order decides, as for anyone)."""
    if peerless_for_s is None:
        return False
    return joining or peerless_for_s >= PEERLESS_GRACE_S


def newcomer_wins(
    *,
    existing_identity: str,
    existing_initiator: str,
    new_identity: str,
    new_initiator: str,
) -> bool:
    """Two connections to one daemon: whether the new one replaces the open one.

    Both ends decide alike, so exactly one link survives: the new one wins when the peer
    restarted (a new run identity), when the same side dialled both times (the old one is
    stale), or when it was dialled by the daemon whose id sorts first.
    """
    return (
        existing_identity != new_identity
        or existing_initiator == new_initiator
        or new_initiator < existing_initiator
    )


def may_claim(existing_shares: Collection[bytes], proven_share: bytes) -> bool:
    """Whether a new connection that claims the daemon id of an open one may take its place.

    A daemon id is only asserted, not proven: a daemon that shares another notebook with us
    could claim a member's id and make us drop that member's link again and again. So a
    newcomer must have proven a share the open link carries (a restarted peer redials with
    one of the shares it holds with us); a link that carries nothing yet protects nothing.
    """
    return not existing_shares or proven_share in existing_shares


class Admission(enum.Enum):
    """What a listener does with a member that dialled it."""

    ACCEPT = "accept"
    SHED_ONE = "shed one link, then accept"  # full, but the dialler is a newcomer
    REFUSE = "refuse"  # full: TooManyPeers, the dialler tries other members


def admission(*, open_connections: int, max_peers: int, newcomer: bool) -> Admission:
    """Whether a listener lets one more member connect.

    It accepts twice the connections it dials, and one more from a newcomer (a member with
    no link to the share yet). A full listener still admits a newcomer, by shedding one
    surplus link (``link_to_shed``), once the newcomer has proven membership: under load
    the slots fill with links made in parallel while the mesh formed, and a late joiner
    refused by every member would never get the notebook. Any other member is refused.
    """
    if open_connections < member_bound(max_peers, joining=newcomer):
        return Admission.ACCEPT
    return Admission.SHED_ONE if newcomer else Admission.REFUSE


@dataclass(frozen=True)
class HeldLink:
    """What a listener knows of one of its open links when it must shed one."""

    peer_id: str
    age_s: float  # how long it has been open
    came_as_newcomer: bool  # the far end dialled us when it had no link to the share


def link_to_shed(links: Iterable[HeldLink]) -> str | None:
    """The peer whose link a full listener closes to admit a newcomer, or None (refuse).

    Only links open for ``STABLE_CONNECTION_S`` qualify: a newcomer admitted a moment ago
    may still be waiting for the content, and shedding it for the next one would lock them
    out in turn. First choice is a link a newcomer dialled: it dialled every member it
    found at once, so its other end most likely holds other links (the surplus that fills
    listeners while a mesh forms). Ties go to the smallest peer id, so a replay decides
    alike. A shed member left with no link to a share is a newcomer again: it dials every
    member and is admitted the same way, so nobody is left out of the mesh.
    """
    settled = [link for link in links if link.age_s >= STABLE_CONNECTION_S]
    if not settled:
        return None
    return min(settled, key=lambda link: (not link.came_as_newcomer, link.peer_id)).peer_id


def member_bound(max_peers: int, *, joining: bool) -> int:
    """Connections a listener accepts: twice those it dials, one more from a newcomer."""
    return 2 * max_peers + (JOINER_ALLOWANCE if joining else 0)


class HandshakeSlots:
    """Rendezvous pipes whose dialler has proven nothing yet: bounded in all and per source
    address, apart from the members' connection budget, so idle or hostile pipes from one
    LAN neighbour can neither fill the daemon nor keep members from connecting."""

    def __init__(self, total: int = MAX_HANDSHAKES, per_source: int = MAX_PER_SOURCE) -> None:
        self._total = total
        self._per_source = per_source
        self._held: dict[str, int] = {}

    def take(self, source: str) -> bool:
        """One more pipe from ``source``, unless a bound is reached."""
        if sum(self._held.values()) >= self._total or self._held.get(source, 0) >= self._per_source:
            return False
        self._held[source] = self._held.get(source, 0) + 1
        return True

    def release(self, source: str) -> None:
        left = self._held.get(source, 0) - 1
        if left > 0:
            self._held[source] = left
        else:
            self._held.pop(source, None)


def relay_targets(peers: Iterable[tuple[Peer, bool]], origin: Peer | None) -> list[Peer]:
    """Where an update goes: each peer whose session holds the doc, except its sender.

    ``peers`` pairs each peer with whether its session holds the doc. Only updates that
    changed our doc are relayed (the sync session reports no others), which ends the gossip.
    """
    return [peer for peer, holds_doc in peers if holds_doc and peer != origin]


@dataclass
class Backoff:
    """When to try a daemon again after failures; ``now`` is a monotonic clock in seconds."""

    failures: int = 0
    next_attempt: float = 0.0

    def due(self, now: float) -> bool:
        return now >= self.next_attempt

    def failed(self, now: float) -> None:
        self.failures += 1
        self.next_attempt = now + min(MAX_BACKOFF_S, 0.5 * 2**self.failures)

    def busy(self, now: float, rng: random.Random) -> None:
        """It had no room for us: jittered, so joiners refused together do not return together."""
        self.next_attempt = now + BUSY_RETRY_S * rng.uniform(0.5, 1.5)

    def connection_ended(self, now: float, lasted_s: float) -> None:
        if lasted_s < STABLE_CONNECTION_S:
            self.failed(now)
        else:
            self.failures = 0
            self.retry_now()

    def retry_now(self) -> None:
        """Something changed (it announced itself again): no need to wait out the delay."""
        self.next_attempt = 0.0
