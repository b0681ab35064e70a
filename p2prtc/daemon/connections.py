"""The live peer connections, by peer daemon id, and the rules over them: one connection per
pair of daemons (core/mesh.newcomer_wins, may_claim) and who gets an update
(core/mesh.relay_targets). The registry (registry.py) holds it as ``connections``.
"""

from __future__ import annotations

import logging

from p2prtc.core.mesh import may_claim, newcomer_wins, relay_targets
from p2prtc.daemon.names import KnownNames
from p2prtc.daemon.peer import PeerConnection
from p2prtc.daemon.share import Share

logger = logging.getLogger(__name__)


class Connections:
    """Connections by peer daemon id; ``names`` learns what each peer says it is called."""

    def __init__(self, names: KnownNames) -> None:
        self._by_peer: dict[str, PeerConnection] = {}
        self.connecting = 0  # dials and answers in progress
        self._names = names

    def get(self, peer_id: str) -> PeerConnection | None:
        return self._by_peer.get(peer_id)

    def all(self) -> list[PeerConnection]:
        """Every connection now (a copy: closing one while going through them is fine)."""
        return list(self._by_peer.values())

    def peers_of(self, share: Share) -> list[PeerConnection]:
        """The connections whose session holds ``share``."""
        return [c for c in self._by_peer.values() if share.share_id in c.sync.doc_ids]

    def has_peer_for(self, share: Share) -> bool:
        return any(c.is_open for c in self.peers_of(share))

    def open_count(self) -> int:
        """Open connections plus those being set up (so parallel dials cannot overshoot)."""
        open_now = sum(1 for connection in self._by_peer.values() if connection.is_open)
        return open_now + self.connecting

    async def register(self, connection: PeerConnection, proven_share: bytes) -> bool:
        """One connection per pair of daemons: a duplicate keeps a deterministic winner.

        ``proven_share`` is the share the newcomer authenticated with: a claim of an id
        whose open link carries other shares only is refused (see ``mesh.may_claim``).
        """
        existing = self._by_peer.get(connection.peer_id)
        if existing is not None and existing.is_open:
            if self.refuses_claim(connection.peer_id, proven_share):
                logger.warning(
                    "refused a connection claiming to be %s: it proved no share of the open "
                    "link to that daemon",
                    connection.peer_id,
                )
                await connection.close()
                return False
            newcomer = newcomer_wins(
                existing_identity=existing.peer_identity,
                existing_initiator=existing.initiator_id,
                new_identity=connection.peer_identity,
                new_initiator=connection.initiator_id,
            )
            loser = existing if newcomer else connection
            await loser.close()
            if loser is connection:
                return False
        self._by_peer[connection.peer_id] = connection
        self._names.learn(connection.peer_id, connection.peer_name)
        return True

    def refuses_claim(self, peer_id: str, proven_share: bytes) -> bool:
        """Whether a new connection from ``peer_id`` that proved ``proven_share`` is refused:
        it claims the id of a daemon whose open link carries other shares only."""
        existing = self._by_peer.get(peer_id)
        if existing is None or not existing.is_open:
            return False
        return not may_claim(existing.sync.doc_ids, proven_share)

    def unregister(self, connection: PeerConnection) -> None:
        if self._by_peer.get(connection.peer_id) is connection:
            del self._by_peer[connection.peer_id]

    async def broadcast(self, share: Share, update: bytes, exclude: str | None = None) -> None:
        """Send an update of ``share`` to its peers (relayed ones not back to their sender)."""
        holders = [(p, share.share_id in c.sync.doc_ids) for p, c in self._by_peer.items()]
        for peer_id in relay_targets(holders, exclude):
            connection = self._by_peer.get(peer_id)
            if connection is not None:  # one that closed while we sent to the others
                await connection.send(connection.sync.local_update(share.share_id, update))
