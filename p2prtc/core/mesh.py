"""The mesh's pure rules: which side dials, which duplicate connection wins (and which may
claim an id at all), backoff, relay.

The daemon's dialer and registry apply these; ``scripts/sim_mesh.py`` runs the same relay
rule at scale. Time and randomness are arguments, so a seeded replay decides the same way.
"""

from __future__ import annotations

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
# Connections a listener accepts beyond its bound for members still joining.
JOINER_ALLOWANCE = 1
# Rendezvous pipes still in their handshake, in all and from one source address.
MAX_HANDSHAKES = 64
MAX_PER_SOURCE = 8

Peer = TypeVar("Peer")


def should_dial(
    *,
    joining_without_peer: bool,
    open_connections: int,
    dials_in_progress: int,
    max_peers: int,
    ranks: tuple[str, str] | None,
) -> bool:
    """Whether we dial a daemon that may hold one of our shares (else we wait for its call).

    A joiner still waiting for a share's state dials every member it finds at once (the
    first to answer hands the share over), up to the bound a listener accepts; past it, one
    at a time, so links held for other shares never lock it out. Past ``max_peers``
    connections nobody new is dialled: shares then reach further members by gossip over the
    partial mesh. Otherwise one side dials, the one whose announced name (``ranks``: ours,
    theirs) sorts first; without names to compare (a static address) we dial.
    """
    if joining_without_peer:
        return dials_in_progress == 0 or open_connections < member_bound(max_peers, joining=True)
    if open_connections >= max_peers:
        return False
    if ranks is None:
        return True
    ours, theirs = ranks
    return ours < theirs


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


def accepts_member(*, open_connections: int, max_peers: int, joining: bool) -> bool:
    """Whether a listener lets one more member connect.

    It accepts twice the connections it dials; a member still waiting for a share's
    content may take one more, so daemons full of connections to each other never lock a
    late joiner out (it gets the notebook, then the mesh goes on without it dialling).
    """
    return open_connections < member_bound(max_peers, joining=joining)


def member_bound(max_peers: int, *, joining: bool) -> int:
    """Connections a daemon holds at most: twice those it dials, one more for a joiner."""
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
