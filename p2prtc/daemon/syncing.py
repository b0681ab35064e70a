"""Syncing: what peers' messages do to our shares.

A share authenticated on a connection joins its sync session; a peer's update is persisted,
rendered and relayed to the share's other peers; a completed first sync writes the file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from p2prtc.core.sync import PeerError, ProtocolViolation, RemoteUpdate, Send, Synced, SyncEvent
from p2prtc.daemon.peer import PeerConnection
from p2prtc.daemon.registry import Registry
from p2prtc.daemon.share import ShareState
from p2prtc.errors import P2PError

logger = logging.getLogger(__name__)


class Syncing:
    """Handles the sync events of every connection (the connections' ``on_events``)."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    async def on_peer_share(self, connection: PeerConnection, share_id: bytes) -> None:
        """The peer proved it is a member of ``share_id``: sync that doc with it."""
        share = self._registry.shares.get(share_id)
        if share is None or share.state is ShareState.CLOSED:
            return
        if connection.peer_id in share.record.removed:
            await connection.remove_doc(share_id)  # it proved an old secret we rotated away
            return
        if connection.peer_id not in share.record.members:
            share.record.members.append(connection.peer_id)
            share.record.save(self._registry.home)
        await connection.add_doc(share_id, share.file.doc)

    async def on_peer_events(self, connection: PeerConnection, events: Sequence[SyncEvent]) -> None:
        for event in events:
            if isinstance(event, Send):
                await connection.send(event.messages)
            elif isinstance(event, RemoteUpdate):
                await self._on_remote_update(connection, event)
            elif isinstance(event, Synced):
                share = self._registry.shares.get(event.doc_id)
                if share is not None:
                    share.schedule_write()
            elif isinstance(event, ProtocolViolation):
                await connection.fail(event.reason)
            elif isinstance(event, PeerError):
                logger.warning("peer %s closed with: %s", connection.peer_id, event.reason)
                await connection.close()

    async def _on_remote_update(self, connection: PeerConnection, event: RemoteUpdate) -> None:
        share = self._registry.shares.get(event.doc_id)
        if share is None:
            return
        try:
            share.remote_update(event.update, connection.peer_id)
        except P2PError as exc:  # kept in memory and retried by the writer (disk full...)
            share.last_error = exc.message
        # Relayed either way: the peer that made it has it durably, and the rest of a
        # partial mesh must not wait for a reconnection to get it.
        await self._registry.broadcast(share, event.update, exclude=connection.peer_id)

    async def resync_all(self) -> None:
        """Anti-entropy on live connections: a state-vector exchange per shared doc."""
        for connection in list(self._registry.connections.values()):
            for doc_id in connection.sync.doc_ids:
                await connection.send(connection.sync.resync(doc_id))
