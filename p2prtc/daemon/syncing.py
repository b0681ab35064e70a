"""Syncing: what peers' messages do to our shares.

A share authenticated on a connection joins its sync session; a peer's update is persisted,
rendered and relayed to the share's other peers; a completed first sync writes the file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pycrdt import Doc

from p2prtc.core.membership import Standing
from p2prtc.core.pipesync import PipeSyncError
from p2prtc.core.sync import (
    LeaveReason,
    PeerError,
    PeerLeft,
    ProtocolViolation,
    RemoteUpdate,
    Send,
    Synced,
    SyncEvent,
    apply_sync_message,
)
from p2prtc.daemon.peer import PeerConnection
from p2prtc.daemon.registry import Registry
from p2prtc.daemon.share import Share, ShareState
from p2prtc.daemon.state import ShareRecord

logger = logging.getLogger(__name__)

# What a LEAVE that cuts us off tells about our standing in the share.
_CUT_OFF = {LeaveReason.REMOVED: Standing.REMOVED, LeaveReason.OUTDATED: Standing.OUTDATED}


class Syncing:
    """Handles the sync events of every connection (the connections' ``on_events``)."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def doc_to_sync(self, peer_id: str, share_id: bytes, secret: bytes) -> Doc[Any] | None:
        """The share's doc if we sync it with that peer, which proved ``secret``; None if
        we refuse it (``on_peer_share`` then tells it why) or the share is not open."""
        share = self._open_share(share_id)
        if share is None or _refusal(share.record, peer_id, secret) is not None:
            return None
        return share.file.doc

    def _open_share(self, share_id: bytes) -> Share | None:
        share = self._registry.shares.get(share_id)
        return None if share is None or share.state is ShareState.CLOSED else share

    async def on_peer_share(
        self, connection: PeerConnection, share_id: bytes, secret: bytes
    ) -> None:
        """The peer proved it holds ``secret`` of ``share_id``: sync that doc with it, or,
        for a secret rotated away, tell it that it was cut off (and why)."""
        share = self._open_share(share_id)
        if share is None:
            return
        record = share.record
        reason = _refusal(record, connection.peer_id, secret)
        if reason is not None:
            logger.info("%s: telling %s it is %s", share.path, connection.label, reason.value)
            await connection.refuse_doc(share_id, reason)
            if not connection.sync.doc_ids:  # nothing else in common: it takes no slot of ours
                await connection.fail(f"it is {reason.value} from a share")
            return
        if connection.peer_id not in record.members or connection.peer_id in record.departed:
            if connection.peer_id not in record.members:
                record.members.append(connection.peer_id)
            if connection.peer_id in record.departed:  # invited again
                record.departed.remove(connection.peer_id)
            record.save(self._registry.home)
        await connection.add_doc(share_id, share.file.doc)

    async def on_first_state(
        self, peer_id: str, share_id: bytes, step2: bytes, address: str
    ) -> None:
        """A peer's SyncStep2 of the share, come over the rendezvous pipe (from ``address``)
        before any link (core/pipesync.py): merged, persisted, relayed and written exactly
        as the first SyncStep2 on a link is. PipeSyncError for a state pycrdt cannot read."""
        share = self._open_share(share_id)
        if share is None:
            return
        if share.state is ShareState.JOINING and share.state_from is None:
            share.state_from = {"id": peer_id, "address": address, "path_type": "rendezvous pipe"}
        try:
            updates = apply_sync_message(step2, share.file.doc)
        except ValueError as exc:
            raise PipeSyncError(f"bad state: {exc}") from None
        for update in updates:
            await self._remote_update(share, update, peer_id)
        share.schedule_write()

    async def on_peer_events(self, connection: PeerConnection, events: Sequence[SyncEvent]) -> None:
        for event in events:
            if isinstance(event, Send):
                await connection.send(event.messages)
            elif isinstance(event, RemoteUpdate):
                share = self._registry.shares.get(event.doc_id)
                if share is not None:
                    await self._remote_update(share, event.update, connection.peer_id)
            elif isinstance(event, Synced):
                share = self._registry.shares.get(event.doc_id)
                if share is not None:
                    share.schedule_write()
            elif isinstance(event, ProtocolViolation):
                await connection.fail(event.reason)
            elif isinstance(event, PeerLeft):
                self._on_peer_left(connection, event)
            elif isinstance(event, PeerError):
                logger.warning("peer %s closed with: %s", connection.label, event.reason)
                await connection.close()

    def _on_peer_left(self, connection: PeerConnection, event: PeerLeft) -> None:
        """A member stopped syncing a share with us: remember why, for ``status``."""
        share = self._registry.shares.get(event.doc_id)
        if share is None:
            return
        record = share.record
        if event.reason in _CUT_OFF:
            logger.warning(
                "%s: %s says this daemon is %s", share.path, connection.label, event.reason.value
            )
            record.told_cut_off(_CUT_OFF[event.reason], connection.peer_id)
        elif event.reason is LeaveReason.LEFT and connection.peer_id not in record.departed:
            logger.info("%s: %s left the share", share.path, connection.label)
            record.departed.append(connection.peer_id)
        else:
            return
        record.save(self._registry.home)

    async def _remote_update(self, share: Share, update: bytes, peer_id: str) -> None:
        """A peer's update changed the doc: persist and write it, relay it to the others."""
        share.remote_update(update, peer_id)
        # Relayed before it is persisted (with the write that shows it): the peer that made
        # it has it durably, and the rest of a partial mesh must not wait for our disk.
        await self._registry.connections.broadcast(share, update, exclude=peer_id)

    async def resync_all(self) -> None:
        """Anti-entropy on live connections: a state-vector exchange per shared doc."""
        for connection in self._registry.connections.all():
            for doc_id in connection.sync.doc_ids:
                await connection.send(connection.sync.resync(doc_id))


def _refusal(record: ShareRecord, peer_id: str, secret: bytes) -> LeaveReason | None:
    """Why we do not sync the share with that peer (it proved ``secret``), None if we do."""
    if peer_id in record.removed:
        return LeaveReason.REMOVED
    return LeaveReason.OUTDATED if secret != record.secret else None
