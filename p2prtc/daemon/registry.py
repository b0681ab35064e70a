"""The registry: the shares this daemon holds, and its live peer connections.

It owns the shares (open, close, follow a renamed file, find by path or handshake) and holds
the connections (connections.py: one per daemon, who gets an update); it tells its
listeners when what we announce may have changed.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from p2prtc.adapters.watcher import FileWatcher
from p2prtc.core.handshake import share_lookup
from p2prtc.core.sync import LeaveReason
from p2prtc.daemon.connections import Connections
from p2prtc.daemon.document import SharedFile
from p2prtc.daemon.names import KnownNames
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
    """Shares by id, and the connections (by peer daemon id)."""

    def __init__(self, home: Path, watcher: FileWatcher) -> None:
        self.home = home
        self.shares: dict[bytes, Share] = {}
        self.names = KnownNames(home)  # what daemons are called (peers told us; and ours)
        self.connections = Connections(self.names)
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
        share = Share(record, file, self.connections.broadcast, state)
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
        for connection in self.connections.all():
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
