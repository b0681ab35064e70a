"""Commands: the control socket's requests (share, join, status...), each one handler.

A handler checks its request, asks the service that owns the concern, and shapes the answer
(the JSON documented in docs/cli.md). Errors are raised as P2PError and reach the user.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from p2prtc import __version__, paths
from p2prtc.adapters.store import UpdateStore
from p2prtc.core.messages import BadMessage, check_file_name
from p2prtc.daemon import changelog
from p2prtc.daemon.config import endpoint
from p2prtc.daemon.control import Report
from p2prtc.daemon.discovery import Discovery
from p2prtc.daemon.document import SharedFile
from p2prtc.daemon.invitations import Invitations
from p2prtc.daemon.joining import Joining
from p2prtc.daemon.membership import Membership
from p2prtc.daemon.registry import Registry
from p2prtc.daemon.rooms import RoomLinks
from p2prtc.daemon.share import Share, ShareState
from p2prtc.daemon.state import ShareRecord
from p2prtc.errors import P2PError

Request = dict[str, Any]
Answer = dict[str, Any]


class BadRequest(P2PError):
    """The request to the daemon is invalid."""


class NameNotShareable(P2PError):
    """Other machines would refuse this file name (hidden or not a plain name); rename it."""


class Commands:
    """Answers control requests (the control server's handler)."""

    def __init__(
        self,
        daemon_id: str,
        daemon_name: str,
        registry: Registry,
        invitations: Invitations,
        discovery: Discovery,
        joining: Joining,
        membership: Membership,
        *,
        rendezvous_port: Callable[[], int | None],
        request_stop: Callable[[], None],
        rooms: RoomLinks,
    ) -> None:
        self._daemon_id = daemon_id
        self._daemon_name = daemon_name
        self._registry = registry
        self._invitations = invitations
        self._discovery = discovery
        self._joining = joining
        self._membership = membership
        self._rendezvous_port = rendezvous_port
        self._request_stop = request_stop
        self._rooms = rooms

    async def handle(self, request: Request, report: Report) -> Answer:
        handlers: dict[str, Callable[[Request], Awaitable[Answer]]] = {
            "ping": self._ping,
            "share": self._share,
            "invite": self._invite,
            "join": lambda request: self._joining.join(request, report),
            "status": self._status,
            "leave": self._leave,
            "members": self._members,
            "log": self._log,
            "remove": self._remove,
            "stop": self._stop,
            "settings": self._settings,
        }
        handler = handlers.get(str(request.get("cmd")))
        if handler is None:
            raise BadRequest(f"unknown command {request.get('cmd')!r}")
        return await handler(request)

    async def _ping(self, request: Request) -> Answer:
        return {"pid": os.getpid(), "version": __version__}

    async def _share(self, request: Request) -> Answer:
        path = Path(str(request["path"]))
        if self._registry.share_for_path(path) is not None:
            # Sharing it again means "let one more machine in": a fresh invitation.
            return {**await self._invite(request), "already_shared": True}
        try:
            check_file_name(path.name)  # what a joiner checks in the welcome
        except BadMessage as exc:
            raise NameNotShareable(exc.detail) from None
        home = self._registry.home
        record = ShareRecord.new(path, self._daemon_id)
        paths.make_private_dir(record.folder(home))
        store = UpdateStore(record.store_path(home))
        try:
            file = SharedFile.create(path, store, self._daemon_id)
        except BaseException:
            store.close()
            record.delete(home)
            raise
        record.joined = True
        record.save(home)
        share = self._registry.open_share(record, file, ShareState.ACTIVE)
        await self._registry.watch(share)
        answer = await self._joining.invite(share, request)
        return {**answer, "path": str(path), "share_id": record.share_id.hex()}

    async def _invite(self, request: Request) -> Answer:
        share = self._registry.shared(Path(str(request["path"])))
        return {**await self._joining.invite(share, request), "path": str(share.path)}

    async def _status(self, request: Request) -> Answer:
        self._invitations.expire()  # an expired invitation is not shown, even between ticks
        now = time.time()
        return {
            "daemon": {
                "pid": os.getpid(),
                "home": str(self._registry.home),
                "version": __version__,
                "id": self._daemon_id,
                "name": self._daemon_name,
                "rendezvous_port": self._rendezvous_port(),
                "mdns": self._discovery.config.mdns,
                "mdns_error": self._discovery.lan.error,
                "signaling": self._discovery.relay.status(),
            },
            "shares": [self._share_status(share, now) for share in self._registry.shares.values()],
        }

    def _share_status(self, share: Share, now: float) -> Answer:
        peers = [
            {**connection.status(), "synced": connection.sync.is_synced(share.share_id)}
            for connection in self._registry.connections.peers_of(share)
        ]
        return {
            "path": str(share.path),
            "id": share.share_id.hex(),
            "name": share.record.name,
            "state": share.state.value,
            "standing": share.record.standing(self._daemon_id).value,
            "cut_off_by": share.record.cut_off_by or None,
            "synced": bool(peers) and all(peer["synced"] for peer in peers),
            "last_error": share.last_error,
            "members": share.record.members,
            "peers": peers,
            "invitations": [i.status(now) for i in self._invitations.for_share(share.share_id)],
            "retired_invitations": [
                r.status() for r in self._invitations.retired_for_share(share.share_id)
            ],
            "rooms": self._rooms.labels(share),
            "concurrent_edits": changelog.recent_concurrent(
                share.file.store, now, self._registry.names.label
            ),
        }

    async def _leave(self, request: Request) -> Answer:
        share = self._registry.shared(Path(str(request["path"])))
        self._invitations.drop_share(share.share_id)
        await self._registry.close_share(share)
        self._rooms.share_left(share)  # after its last write: its rooms turn stock again
        await self._registry.changed()
        return {"path": str(share.path)}

    async def _members(self, request: Request) -> Answer:
        share = self._registry.shared(Path(str(request["path"])))
        return {"path": str(share.path), "members": self._membership.members(share)}

    async def _log(self, request: Request) -> Answer:
        share = self._registry.shared(Path(str(request["path"])))
        limit = request.get("limit", changelog.DEFAULT_ENTRIES)
        if not isinstance(limit, int) or limit < 1:
            raise BadRequest("the number of log entries must be a positive integer")
        answer = changelog.log_answer(share.file.store, limit, self._registry.names.label)
        return {"path": str(share.path), "daemon_id": self._daemon_id, **answer}

    async def _remove(self, request: Request) -> Answer:
        share = self._registry.shared(Path(str(request["path"])))
        return {
            "path": str(share.path),
            **await self._membership.remove(share, str(request["member"])),
        }

    async def _settings(self, request: Request) -> Answer:
        """What a command asks for: static peers are dialled from now on (until the daemon
        stops); the settings it runs with are returned for the CLI to compare."""
        added = [
            key
            for host, port in (endpoint(str(item)) for item in request.get("peers", []))
            if (key := self._discovery.add_peer(host, port)) is not None
        ]
        return {"settings": self._discovery.settings(), "added_peers": added}

    async def _stop(self, request: Request) -> Answer:
        # Answer first; the control server is closed by the shutdown this schedules.
        asyncio.get_running_loop().call_later(0.05, self._request_stop)
        return {"stopping": True}
