"""Membership: who belongs to a share, removing a member, and spreading a rotated secret.

Removing a member rotates the share's secret (a new generation) and hands it, over the
authenticated connections, to the members that remain; they pass it on (REKEY frames).
"""

from __future__ import annotations

import logging
from typing import Any

from p2prtc.core.keys import new_secret
from p2prtc.core.messages import BadMessage, Rekey
from p2prtc.daemon.peer import PeerConnection
from p2prtc.daemon.registry import Registry
from p2prtc.daemon.share import Share
from p2prtc.errors import ExitCode, P2PError

logger = logging.getLogger(__name__)


class NoSuchMember(P2PError):
    """No other member of this share has that id (see p2prtc members)."""

    exit_code = ExitCode.NOT_SHARED


class Membership:
    """Members of our shares and their secrets' rotation."""

    def __init__(self, daemon_id: str, registry: Registry) -> None:
        self._daemon_id = daemon_id
        self._registry = registry

    def members(self, share: Share) -> list[dict[str, Any]]:
        connected = {c.peer_id for c in self._registry.connections.values() if c.is_open}
        return [
            {"id": member, "self": member == self._daemon_id, "connected": member in connected}
            for member in share.record.members
        ]

    async def remove(self, share: Share, prefix: str) -> str:
        """Drop a member and rotate the secret, so the removed daemon cannot reconnect."""
        matches = [m for m in share.record.members if m.startswith(prefix) and m != self._daemon_id]
        if len(matches) != 1:
            raise NoSuchMember(prefix if not matches else f"{prefix} is ambiguous")
        (removed,) = matches
        record = share.record
        record.members.remove(removed)
        record.secret = new_secret()
        record.generation += 1
        record.save(self._registry.home)
        await self._spread_rekey(share, exclude=None)
        await self._registry.changed()
        logger.info("removed member %s from %s and rotated its secret", removed, share.path)
        return removed

    async def _spread_rekey(self, share: Share, exclude: str | None) -> None:
        """New secret to connected members; connections to non-members drop the share."""
        record = share.record
        payload = Rekey(record.secret, record.generation, tuple(record.members)).encode()
        for connection in self._registry.peers_of(share):
            if connection.peer_id not in record.members:
                await connection.remove_doc(share.share_id)
            elif connection.peer_id != exclude:
                await connection.send_rekey(share.share_id, payload)

    async def on_rekey(self, connection: PeerConnection, share_id: bytes, payload: bytes) -> None:
        """A member sent a share's rotated secret (the connections' ``on_rekey``)."""
        share = self._registry.shares.get(share_id)
        try:
            rekey = Rekey.decode(payload)
        except BadMessage as exc:
            await connection.fail(f"malformed REKEY: {exc.detail}")
            return
        if share is None or rekey.generation <= share.record.generation:
            return
        if connection.peer_id not in share.record.members or self._daemon_id not in rekey.members:
            return
        share.record.secret, share.record.generation = rekey.secret, rekey.generation
        share.record.members = list(rekey.members)
        share.record.save(self._registry.home)
        logger.info("the secret of %s was rotated by %s", share.path, connection.peer_id)
        await self._spread_rekey(share, exclude=connection.peer_id)
        await self._registry.changed()
