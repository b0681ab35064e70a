"""The registry: the shares this daemon holds and its live peer connections.

It owns both tables and the rules over them (one connection per daemon, who gets an
update), and tells its listeners when what we announce may have changed.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from p2prtc.adapters.watcher import FileWatcher
from p2prtc.core.handshake import share_lookup
from p2prtc.core.mesh import may_claim, newcomer_wins, relay_targets
from p2prtc.core.sync import LeaveReason
from p2prtc.daemon.document import SharedFile
from p2prtc.daemon.names import KnownNames
from p2prtc.daemon.peer import PeerConnection
from p2prtc.daemon.share import Share, ShareState
from p2prtc.daemon.state import ShareRecord
from p2prtc.errors import ExitCode, P2PError

logger = logging.getLogger(__name__)

Listener = Callable[[], Awaitable[None]]


class AlreadyShared(P2PError):
    """This notebook is already shared by this daemon."""

    exit_code = ExitCode.NOT_SHARED


class NotShared(P2PError):
    """This file is not shared by this daemon."""

    exit_code = ExitCode.NOT_SHARED


class Registry:
    """Shares by id and connections by peer daemon id."""

    def __init__(self, home: Path, watcher: FileWatcher) -> None:
        self.home = home
        self.shares: dict[bytes, Share] = {}
        self.connections: dict[str, PeerConnection] = {}
        self.connecting = 0  # dials and answers in progress
        self.names = KnownNames(home)  # what daemons are called (peers told us; and ours)
        self._watcher = watcher
        self._listeners: list[Listener] = []

    def on_changed(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def changed(self) -> None:
        """Shares, secrets or invitations changed: listeners re-announce us."""
        for listener in self._listeners:
            await listener()

    # --- shares --------------------------------------------------------------------------

    def open_share(self, record: ShareRecord, file: SharedFile, state: ShareState) -> Share:
        share = Share(record, file, self.broadcast, state)
        share.on_active = self._became_active
        share.missing.on_renamed = functools.partial(self._follow_rename, share)
        self.shares[record.share_id] = share
        return share

    async def _became_active(self, share: Share) -> None:
        share.record.save(self.home)
        await self.watch(share)
        await self.changed()

    async def _follow_rename(self, share: Share, new_path: Path) -> bool:
        """The share's file was renamed: the share follows it, durably (a restart finds the
        new name). False, and nothing changed, if another share holds that name."""
        if self.share_for_path(new_path) is not None:
            logger.warning("%s was renamed to %s, which is shared already", share.path, new_path)
            return False
        old_path = share.path
        await self._watcher.add(new_path)  # before the old name goes: no save is missed
        share.rename(new_path)
        try:
            share.record.save(self.home)
        except OSError as exc:  # followed until a restart, which writes the old name back
            logger.error("the new name of %s could not be recorded: %s", new_path, exc)
        await self._watcher.remove(old_path)
        return True

    async def watch(self, share: Share) -> None:
        """Its file's saves are ingested from now on."""
        await self._watcher.add(share.path)

    async def close_share(self, share: Share) -> None:
        """Stop syncing ``share``: peers drop it, its record and store go; the file stays."""
        del self.shares[share.share_id]
        for connection in list(self.connections.values()):
            await connection.remove_doc(share.share_id, LeaveReason.LEFT)
        await self._watcher.remove(share.path)
        await share.close()
        share.record.delete(self.home)

    def share_for_path(self, path: Path) -> Share | None:
        return next((s for s in self.shares.values() if s.path == path), None)

    def shared(self, path: Path) -> Share:
        """The share of ``path``; raises NotShared."""
        share = self.share_for_path(path)
        if share is None:
            raise NotShared(str(path))
        return share

    def lookup(self, nonce: bytes, tag: bytes) -> tuple[bytes, bytes] | None:
        """The share a member handshake's HELLO names, for the responder."""
        shares = self.shares.values()
        current = {share.share_id: share.record.secret for share in shares}
        retired = [(s.share_id, secret) for s in shares for _, secret in s.record.retired]
        return share_lookup(current, retired)(nonce, tag)

    # --- connections ---------------------------------------------------------------------

    def peers_of(self, share: Share) -> list[PeerConnection]:
        """The connections whose session holds ``share``."""
        return [c for c in self.connections.values() if share.share_id in c.sync.doc_ids]

    def has_peer_for(self, share: Share) -> bool:
        return any(c.is_open for c in self.peers_of(share))

    def open_connections(self) -> int:
        """Open connections plus those being set up (so parallel dials cannot overshoot)."""
        open_now = sum(1 for connection in self.connections.values() if connection.is_open)
        return open_now + self.connecting

    async def register(self, connection: PeerConnection, proven_share: bytes) -> bool:
        """One connection per pair of daemons: a duplicate keeps a deterministic winner.

        ``proven_share`` is the share the newcomer authenticated with: a claim of an id
        whose open link carries other shares only is refused (see ``mesh.may_claim``).
        """
        existing = self.connections.get(connection.peer_id)
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
        self.connections[connection.peer_id] = connection
        self.names.learn(connection.peer_id, connection.peer_name)
        return True

    def refuses_claim(self, peer_id: str, proven_share: bytes) -> bool:
        """Whether a new connection from ``peer_id`` that proved ``proven_share`` is refused:
        it claims the id of a daemon whose open link carries other shares only."""
        existing = self.connections.get(peer_id)
        if existing is None or not existing.is_open:
            return False
        return not may_claim(existing.sync.doc_ids, proven_share)

    def unregister(self, connection: PeerConnection) -> None:
        if self.connections.get(connection.peer_id) is connection:
            del self.connections[connection.peer_id]

    async def broadcast(self, share: Share, update: bytes, exclude: str | None = None) -> None:
        """Send an update of ``share`` to its peers (relayed ones not back to their sender)."""
        holders = [(p, share.share_id in c.sync.doc_ids) for p, c in self.connections.items()]
        for peer_id in relay_targets(holders, exclude):
            connection = self.connections.get(peer_id)
            if connection is not None:  # one that closed while we sent to the others
                await connection.send(connection.sync.local_update(share.share_id, update))
