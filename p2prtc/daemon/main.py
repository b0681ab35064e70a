"""The daemon: wires shares, peers, discovery, the watcher and the control socket together."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import random
import secrets
import signal
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from p2prtc import __version__, paths
from p2prtc.adapters.mdns import Announcer, Browser, DiscoveredService, lan_addresses
from p2prtc.adapters.rendezvous import RendezvousError, RendezvousServer, connect_pipe
from p2prtc.adapters.store import UpdateStore
from p2prtc.adapters.watcher import ChangeKind, FileWatcher
from p2prtc.adapters.webrtc import IceConfig, IceServer, PeerLink
from p2prtc.core import roomlink  # issue 12: Jupyter rooms
from p2prtc.core.codes import JoinCode, parse_code
from p2prtc.core.handshake import (
    Authenticated,
    InviteHost,
    InviteJoiner,
    MemberInitiator,
    MemberResponder,
    Refused,
    Welcomed,
    share_lookup,
)
from p2prtc.core.keys import (
    epoch_of,
    invite_topic,
    matches_share_tag,
    member_topic,
    new_secret,
)
from p2prtc.core.sync import (
    PeerError,
    ProtocolViolation,
    RemoteUpdate,
    Send,
    Synced,
    SyncEvent,
)
from p2prtc.daemon import control, files
from p2prtc.daemon.config import DaemonConfig
from p2prtc.daemon.document import SharedFile
from p2prtc.daemon.handshakes import (
    HANDSHAKE_TIMEOUT_S,
    BytePipe,
    TooManyPeers,
    envelope,
    error_reply,
    expect_ok,
    ok_reply,
    parse_envelope,
    remote_error,
    run_handshake,
)
from p2prtc.daemon.invitations import Invitations, NoSuchInvitation
from p2prtc.daemon.peer import PeerConnection
from p2prtc.daemon.rooms import RoomLinks  # issue 12: Jupyter rooms
from p2prtc.daemon.share import Share, ShareState
from p2prtc.daemon.signal_pipes import SignalHub
from p2prtc.daemon.state import ShareRecord, load_daemon_id, load_records
from p2prtc.errors import P2PError

logger = logging.getLogger(__name__)

RECONCILE_INTERVAL_S = 1.0
# Signaling presence is repeated this often, and forgotten when not heard for PRESENCE_TTL_S.
PRESENCE_INTERVAL_S = 15.0
PRESENCE_TTL_S = 60.0
JOINING_PRESENCE_INTERVAL_S = 1.0
# Anti-entropy on live connections: a state-vector exchange per shared doc this often.
RESYNC_INTERVAL_S = 30.0
LINK_OPEN_TIMEOUT_S = 15.0
MAX_BACKOFF_S = 30.0
# A daemon that refused us for having as many connections as it accepts: tried again after
# about this long (not a failure: it backs off no further, and other members are tried).
BUSY_RETRY_S = 2.0
# A connection that ends sooner than this counts as a failed attempt (backing off), so a
# peer that keeps dropping us right away is not redialled in a tight loop.
STABLE_CONNECTION_S = 10.0


class AlreadyShared(P2PError):
    """This notebook is already shared by this daemon."""


class NotShared(P2PError):
    """This file is not shared by this daemon."""


class DestinationExists(P2PError):
    """The destination file exists and differs; pass --force to replace it."""


class JoinTimedOut(P2PError):
    """No member of the share could be reached to sync the notebook; still trying (see status)."""


class BadRequest(P2PError):
    """The request to the daemon is invalid."""


class NoSuchMember(P2PError):
    """No other member of this share has that id (see p2prtc members)."""


PipeOpener = Callable[[], Awaitable[BytePipe]]


class Endpoint:
    """Another daemon we can dial: from mDNS, a static address, or signaling presence."""

    def __init__(
        self,
        key: str,
        opener: PipeOpener,
        properties: dict[str, str] | None = None,
        shares: set[bytes] | None = None,
    ) -> None:
        self.key = key
        self.open_pipe = opener
        self.properties = properties  # mDNS TXT; None when nothing was announced
        self.shares = shares  # the shares a signaling topic proves it holds
        self.peer_id: str | None = None  # learnt from the first successful handshake
        self.seen = time.monotonic()
        self.failures = 0
        self.next_attempt = 0.0
        self.dialling = False

    @property
    def nameplates(self) -> set[str] | None:
        if self.properties is None:
            return None if self.shares is None else set()
        return {n for n in self.properties.get("n", "").split(",") if n}

    def may_hold(self, share_id: bytes, secret: bytes, epoch: int) -> bool:
        if self.shares is not None:
            return share_id in self.shares
        if self.properties is None:
            return True
        tags = [t for t in self.properties.get("t", "").split(",") if t]
        return any(matches_share_tag(secret, tag, epoch) for tag in tags)

    def failed(self) -> None:
        self.failures += 1
        self.next_attempt = time.monotonic() + min(MAX_BACKOFF_S, 0.5 * 2**self.failures)

    def busy(self) -> None:
        # Jittered, so that joiners refused together do not all come back together.
        self.next_attempt = time.monotonic() + BUSY_RETRY_S * random.uniform(0.5, 1.5)

    def connection_ended(self, lasted_s: float) -> None:
        if lasted_s < STABLE_CONNECTION_S:
            self.failed()
        else:
            self.failures = 0
            self.next_attempt = 0.0


def lan_opener(host: str, port: int) -> PipeOpener:
    async def open_pipe() -> BytePipe:
        return await connect_pipe(host, port, HANDSHAKE_TIMEOUT_S)

    return open_pipe


class Daemon:
    """Everything one ``P2PRTC_HOME`` runs."""

    def __init__(self, home: Path, config: DaemonConfig) -> None:
        self.home = home
        self.config = config
        self.daemon_id = load_daemon_id(home)
        # Who we are in handshakes: the stable id plus this run's, so that peers can tell a
        # restarted daemon's new link from a dead one of its previous run.
        self.identity = f"{self.daemon_id}/{secrets.token_hex(4)}"
        self.shares: dict[bytes, Share] = {}
        self.connections: dict[str, PeerConnection] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.invitations = Invitations()
        self.watcher = FileWatcher()
        self.ice = IceConfig(
            servers=[
                IceServer(urls=[url], username=user, credential=password)
                for url, user, password in config.ice_servers()
            ],
            host_addresses=config.interfaces,
            relay_only=config.relay_only,
        )
        self._signal = (
            SignalHub(config.signal_urls, self._on_presence, self._on_pipe)
            if config.signal_urls
            else None
        )
        self._invite_hosts: dict[str, list[str]] = {}  # invite topic -> instances offering it
        self._last_presence = 0.0
        self._connecting = 0  # dials and answers in progress
        self._last_resync = time.monotonic()
        self._stop = asyncio.Event()
        self._poke = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        # --- issue 12: Jupyter rooms attach over the control socket (p2prtc/daemon/rooms.py)
        self.rooms = RoomLinks(
            self._share_for_path,
            self._broadcast,
            self.connections.values,
            config.max_queued_bytes,
        )
        self._control = control.ControlServer(
            paths.control_socket(home), self._handle_request, {roomlink.ATTACH: self.rooms.serve}
        )
        # --- end issue 12
        self._rendezvous: RendezvousServer | None = None
        self._announcer: Announcer | None = None
        self._browser: Browser | None = None
        self._announced: dict[str, str] = {}

    # --- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        for record in load_records(self.home):
            await self._resume(record)
        self._rendezvous = await RendezvousServer.start(
            self.config.listen_host, self.config.port, on_pipe=self._on_pipe
        )
        for host, port in self.config.peers:
            key = f"{host}:{port}"
            self.endpoints[key] = Endpoint(key, lan_opener(host, port))
        if self._signal is not None:
            self._signal.start()
            await self._refresh_discovery()
        if self.config.mdns:
            await self._start_mdns()
        await self.watcher.start()
        self._spawn(self._watch_files(), "watcher")
        self._spawn(self._reconcile_loop(), "reconcile")
        await self._control.start()
        logger.info(
            "daemon %s started: rendezvous port %s, %d shares",
            self.daemon_id,
            self._rendezvous.port,
            len(self.shares),
        )

    async def _start_mdns(self) -> None:
        interfaces = self.config.interfaces or lan_addresses()
        assert self._rendezvous is not None
        self._announced = self._announcement()
        self._announcer = await Announcer.start(interfaces, self._rendezvous.port, self._announced)
        self._browser = await Browser.start(interfaces, self._on_service, self._on_service_gone)

    async def run_until_stopped(self) -> None:
        await self._stop.wait()
        await self.shutdown()

    def request_stop(self) -> None:
        self._stop.set()

    async def shutdown(self) -> None:
        await self._control.close()
        for task in list(self._tasks):
            task.cancel()
        for connection in list(self.connections.values()):
            await connection.close()
        for closer in (self._announcer, self._browser, self._rendezvous, self._signal):
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer.close()
        await self.watcher.close()
        for share in list(self.shares.values()):
            await share.close()
        logger.info("daemon stopped")

    def _spawn(self, coroutine: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("task %s failed", task.get_name(), exc_info=task.exception())

    # --- shares --------------------------------------------------------------------------

    def _open_share(self, record: ShareRecord, file: SharedFile, state: ShareState) -> Share:
        share = Share(record, file, self._broadcast, state)
        share.on_active = self._share_became_active
        self.shares[record.share_id] = share
        return share

    async def _resume(self, record: ShareRecord) -> None:
        try:
            store = UpdateStore(record.store_path(self.home))
            file = SharedFile.restore(record.path, store)
        except P2PError as exc:
            logger.error("cannot resume %s: %s", record.path, exc)
            return
        state = ShareState.ACTIVE if record.joined else ShareState.JOINING
        share = self._open_share(record, file, state)
        if state is ShareState.ACTIVE:
            await self.watcher.add(record.path)
            try:
                file.catch_up()  # persisted; peers get it from anti-entropy when they connect
            except P2PError as exc:
                share.last_error = exc.message

    async def _share_became_active(self, share: Share) -> None:
        share.record.save(self.home)
        await self.watcher.add(share.path)
        await self._refresh_discovery()

    def _share_for_path(self, path: Path) -> Share | None:
        return next((s for s in self.shares.values() if s.path == path), None)

    async def _broadcast(self, share: Share, update: bytes, exclude: str | None = None) -> None:
        for connection in list(self.connections.values()):
            if connection.peer_id != exclude and share.share_id in connection.sync.doc_ids:
                await connection.send(connection.sync.local_update(share.share_id, update))

    async def _watch_files(self) -> None:
        async for event in self.watcher:
            share = self._share_for_path(event.path)
            if share is None:
                continue
            if event.kind is ChangeKind.DELETED:
                self._spawn(share.file_deleted(), f"deleted {share.path}")
                continue
            try:
                await share.file_changed()
            except Exception as exc:  # one bad file must never stop watching the others
                logger.exception("ingesting %s failed", share.path)
                share.last_error = f"internal error while reading the file: {exc}"

    # --- control requests ----------------------------------------------------------------

    async def _handle_request(self, request: dict[str, Any]) -> dict[str, Any]:
        handlers = {
            "ping": self._cmd_ping,
            "share": self._cmd_share,
            "invite": self._cmd_invite,
            "join": self._cmd_join,
            "status": self._cmd_status,
            "leave": self._cmd_leave,
            "members": self._cmd_members,
            "remove": self._cmd_remove,
            "stop": self._cmd_stop,
        }
        handler = handlers.get(str(request.get("cmd")))
        if handler is None:
            raise BadRequest(f"unknown command {request.get('cmd')!r}")
        return await handler(request)

    async def _cmd_ping(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"pid": os.getpid(), "version": __version__}

    async def _cmd_share(self, request: dict[str, Any]) -> dict[str, Any]:
        path = Path(str(request["path"]))
        if self._share_for_path(path) is not None:
            raise AlreadyShared(str(path))
        record = ShareRecord.new(path, self.daemon_id)
        paths.make_private_dir(record.folder(self.home))
        store = UpdateStore(record.store_path(self.home))
        try:
            file = SharedFile.create(path, store)
        except BaseException:
            store.close()
            record.delete(self.home)
            raise
        record.joined = True
        record.save(self.home)
        share = self._open_share(record, file, ShareState.ACTIVE)
        await self.watcher.add(path)
        answer = await self._invite(share, request)
        return {**answer, "path": str(path), "share_id": record.share_id.hex()}

    async def _cmd_invite(self, request: dict[str, Any]) -> dict[str, Any]:
        share = self._share_for_path(Path(str(request["path"])))
        if share is None:
            raise NotShared(str(request["path"]))
        return {**await self._invite(share, request), "path": str(share.path)}

    async def _invite(self, share: Share, request: dict[str, Any]) -> dict[str, Any]:
        invitation = self.invitations.create(
            share.share_id,
            words=int(request.get("words", 2)),
            lifetime_s=float(request.get("expires_s", 900)),
            uses=int(request.get("uses", 1)),
        )
        await self._refresh_discovery()
        return {"code": str(invitation.code), "expires_at": invitation.expires_at}

    async def _cmd_join(self, request: dict[str, Any]) -> dict[str, Any]:
        code = parse_code(str(request["code"]))
        force = bool(request.get("force"))
        dest = Path(request["dest"]) if request.get("dest") else None
        if dest is not None:
            self._check_destination(dest, force)
        deadline = time.monotonic() + float(request.get("timeout_s", 60))
        welcome = await self._redeem(code, deadline)
        record = self._record_from_welcome(welcome, dest, Path(str(request.get("cwd", "."))))
        self._check_destination(record.path, force)
        paths.make_private_dir(record.folder(self.home))
        record.save(self.home)
        store = UpdateStore(record.store_path(self.home))
        share = self._open_share(record, SharedFile.empty(record.path, store), ShareState.JOINING)
        await self._refresh_discovery()
        self._poke.set()
        try:
            await asyncio.wait_for(share.ready.wait(), max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            raise JoinTimedOut(share.last_error) from None
        return {"path": str(record.path), "share_id": record.share_id.hex()}

    def _check_destination(self, dest: Path, force: bool) -> None:
        if self._share_for_path(dest) is not None:
            raise AlreadyShared(str(dest))
        if dest.exists() and not force:
            raise DestinationExists(str(dest))

    def _record_from_welcome(self, welcome: bytes, dest: Path | None, cwd: Path) -> ShareRecord:
        data = json.loads(welcome)
        share_id = bytes.fromhex(data["share_id"])
        if share_id in self.shares:
            raise AlreadyShared(str(self.shares[share_id].path))
        name = Path(str(data["name"])).name or "shared.ipynb"  # never a path from the peer
        members = [str(m) for m in data.get("members", [])]
        return ShareRecord(
            share_id=share_id,
            secret=bytes.fromhex(data["secret"]),
            path=dest or cwd / name,
            name=name,
            members=[*members, self.daemon_id],
        )

    async def _cmd_status(self, request: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        return {
            "daemon": {
                "pid": os.getpid(),
                "home": str(self.home),
                "version": __version__,
                "id": self.daemon_id,
                "rendezvous_port": self._rendezvous.port if self._rendezvous else None,
                "mdns": self.config.mdns,
                "signaling": self._signal.status() if self._signal else [],
            },
            "shares": [self._share_status(share, now) for share in self.shares.values()],
        }

    def _share_status(self, share: Share, now: float) -> dict[str, Any]:
        peers = [
            {**connection.status(), "synced": connection.sync.is_synced(share.share_id)}
            for connection in self.connections.values()
            if share.share_id in connection.sync.doc_ids
        ]
        return {
            "path": str(share.path),
            "id": share.share_id.hex(),
            "name": share.record.name,
            "state": share.state.value,
            "synced": bool(peers) and all(peer["synced"] for peer in peers),
            "last_error": share.last_error,
            "members": share.record.members,
            "peers": peers,
            "invitations": [i.status(now) for i in self.invitations.for_share(share.share_id)],
            "retired_invitations": [
                r.status() for r in self.invitations.retired_for_share(share.share_id)
            ],
            "rooms": self.rooms.labels(share),  # issue 12: attached Jupyter rooms
        }

    async def _cmd_leave(self, request: dict[str, Any]) -> dict[str, Any]:
        share = self._share_for_path(Path(str(request["path"])))
        if share is None:
            raise NotShared(str(request["path"]))
        del self.shares[share.share_id]
        self.invitations.drop_share(share.share_id)
        for connection in list(self.connections.values()):
            await connection.remove_doc(share.share_id)
        await self.watcher.remove(share.path)
        await share.close()
        self.rooms.share_left(share)  # issue 12: after its last write; rooms turn stock again
        share.record.delete(self.home)
        await self._refresh_discovery()
        return {"path": str(share.path)}

    def _shared(self, request: dict[str, Any]) -> Share:
        share = self._share_for_path(Path(str(request["path"])))
        if share is None:
            raise NotShared(str(request["path"]))
        return share

    async def _cmd_members(self, request: dict[str, Any]) -> dict[str, Any]:
        share = self._shared(request)
        connected = {c.peer_id for c in self.connections.values() if c.is_open}
        members = [
            {"id": member, "self": member == self.daemon_id, "connected": member in connected}
            for member in share.record.members
        ]
        return {"path": str(share.path), "members": members}

    async def _cmd_remove(self, request: dict[str, Any]) -> dict[str, Any]:
        """Drop a member and rotate the secret, so the removed daemon cannot reconnect."""
        share = self._shared(request)
        prefix = str(request["member"])
        matches = [m for m in share.record.members if m.startswith(prefix) and m != self.daemon_id]
        if len(matches) != 1:
            raise NoSuchMember(prefix if not matches else f"{prefix} is ambiguous")
        (removed,) = matches
        record = share.record
        record.members.remove(removed)
        record.secret = new_secret()
        record.generation += 1
        record.save(self.home)
        await self._spread_rekey(share, exclude=None)
        await self._refresh_discovery()
        logger.info("removed member %s from %s and rotated its secret", removed, share.path)
        return {"path": str(share.path), "removed": removed, "members": record.members}

    def _rekey_payload(self, record: ShareRecord) -> bytes:
        return json.dumps(
            {
                "secret": record.secret.hex(),
                "generation": record.generation,
                "members": record.members,
            }
        ).encode()

    async def _spread_rekey(self, share: Share, exclude: str | None) -> None:
        """New secret to connected members; connections to non-members drop the share."""
        payload = self._rekey_payload(share.record)
        for connection in list(self.connections.values()):
            if share.share_id not in connection.sync.doc_ids:
                continue
            if connection.peer_id not in share.record.members:
                await connection.remove_doc(share.share_id)
            elif connection.peer_id != exclude:
                await connection.send_rekey(share.share_id, payload)

    async def _on_rekey(self, connection: PeerConnection, share_id: bytes, payload: bytes) -> None:
        share = self.shares.get(share_id)
        try:
            data = json.loads(payload)
            secret = bytes.fromhex(data["secret"])
            generation = int(data["generation"])
            members = [str(m) for m in data["members"]]
        except (ValueError, KeyError, TypeError):
            await connection.fail("malformed REKEY")
            return
        if share is None or generation <= share.record.generation or len(secret) != 32:
            return
        if connection.peer_id not in share.record.members or self.daemon_id not in members:
            return
        share.record.secret, share.record.generation = secret, generation
        share.record.members = members
        share.record.save(self.home)
        logger.info("the secret of %s was rotated by %s", share.path, connection.peer_id)
        await self._spread_rekey(share, exclude=connection.peer_id)
        await self._refresh_discovery()

    async def _cmd_stop(self, request: dict[str, Any]) -> dict[str, Any]:
        # Answer first; the control server is closed by the shutdown this schedules.
        asyncio.get_running_loop().call_later(0.05, self.request_stop)
        return {"stopping": True}

    # --- discovery -----------------------------------------------------------------------

    def _announcement(self) -> dict[str, str]:
        epoch = epoch_of(time.time())
        return {
            "v": "1",
            "n": ",".join(self.invitations.nameplates()),
            # A joiner has nothing to give yet: other joiners must not take it for a source.
            "t": ",".join(
                share.tag(epoch)
                for share in self.shares.values()
                if share.state is ShareState.ACTIVE
            ),
        }

    async def _refresh_discovery(self) -> None:
        """Announce what changed: mDNS TXT, and the signaling topics we listen on."""
        if self._announcer is not None:
            announcement = self._announcement()
            if announcement != self._announced:
                self._announced = announcement
                await self._announcer.update(announcement)
        if self._signal is not None:
            await self._signal.set_topics(self._signal_topics())

    def _signal_topics(self) -> set[str]:
        topics = {member_topic(share.record.secret) for share in self.shares.values()}
        topics |= {invite_topic(nameplate) for nameplate in self.invitations.nameplates()}
        return topics | set(self._invite_hosts)

    def _share_for_topic(self, topic: str) -> Share | None:
        return next(
            (s for s in self.shares.values() if member_topic(s.record.secret) == topic), None
        )

    def _on_presence(self, topic: str, peer: str, addressed: bool) -> None:
        """Another daemon is on one of our topics: remember it, and answer if it asked."""
        assert self._signal is not None
        if topic in self._invite_hosts:
            if addressed and peer not in self._invite_hosts[topic]:
                self._invite_hosts[topic].append(peer)
            return
        if not addressed:
            self._signal.answer(topic, peer)  # bounded per topic (issue 10)
        share = self._share_for_topic(topic)
        if share is None:
            return  # an invitation topic: the joiner dials us, nothing to remember
        key = f"signal:{peer}"
        endpoint = self.endpoints.get(key)
        if endpoint is None:
            opener = self._signal_opener(topic, peer)
            endpoint = self.endpoints[key] = Endpoint(key, opener, shares=set())
        assert endpoint.shares is not None
        endpoint.shares.add(share.share_id)
        endpoint.seen = time.monotonic()
        self._poke.set()

    def _signal_opener(self, topic: str, peer: str) -> PipeOpener:
        async def open_pipe() -> BytePipe:
            assert self._signal is not None
            return self._signal.open_pipe(topic, peer)

        return open_pipe

    async def _announce_presence(self) -> None:
        """Say we are here on every share's topic (now and then, and when joining)."""
        if self._signal is None:
            return
        self._last_presence = time.monotonic()
        for share in list(self.shares.values()):
            await self._signal.announce(member_topic(share.record.secret))
        stale = time.monotonic() - PRESENCE_TTL_S
        for key, endpoint in list(self.endpoints.items()):
            if key.startswith("signal:") and endpoint.seen < stale:
                del self.endpoints[key]

    def _on_service(self, service: DiscoveredService) -> None:
        if self._announcer is not None and service.name == self._announcer.name:
            return
        if not service.addresses:
            return
        opener = lan_opener(service.addresses[0], service.port)
        endpoint = self.endpoints.get(service.name)
        if endpoint is None:
            endpoint = self.endpoints[service.name] = Endpoint(service.name, opener)
        endpoint.open_pipe = opener
        endpoint.properties = dict(service.properties)
        endpoint.next_attempt = 0.0
        self._poke.set()

    def _on_service_gone(self, name: str) -> None:
        self.endpoints.pop(name, None)

    # --- connecting to members -----------------------------------------------------------

    async def _reconcile_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), RECONCILE_INTERVAL_S)
            self._poke.clear()
            self.invitations.expire()
            await self._refresh_discovery()
            joining = any(s.state is ShareState.JOINING for s in self.shares.values())
            interval = JOINING_PRESENCE_INTERVAL_S if joining else PRESENCE_INTERVAL_S
            if time.monotonic() - self._last_presence > interval:
                await self._announce_presence()
            if time.monotonic() - self._last_resync > RESYNC_INTERVAL_S:
                await self._resync_all()
            for endpoint in list(self.endpoints.values()):
                await self._reconcile_endpoint(endpoint)

    async def _reconcile_endpoint(self, endpoint: Endpoint) -> None:
        epoch = epoch_of(time.time())
        wanted = [
            share
            for share in self.shares.values()
            if share.state is not ShareState.CLOSED
            and endpoint.may_hold(share.share_id, share.record.secret, epoch)
        ]
        if not wanted:
            return
        connection = self._connection_for_endpoint(endpoint)
        if connection is not None:
            for share in wanted:
                if share.share_id not in connection.declined:
                    await connection.authenticate_share(share.share_id, share.record.secret)
            return
        if endpoint.dialling or time.monotonic() < endpoint.next_attempt:
            return
        if not self._should_dial(endpoint, wanted):
            return
        endpoint.dialling = True
        self._spawn(self._dial(endpoint, wanted[0]), f"dial {endpoint.key}")

    async def _resync_all(self) -> None:
        self._last_resync = time.monotonic()
        for connection in list(self.connections.values()):
            for doc_id in connection.sync.doc_ids:
                await connection.send(connection.sync.resync(doc_id))

    def _connection_for_endpoint(self, endpoint: Endpoint) -> PeerConnection | None:
        """Our link to that daemon, whichever side dialled it."""
        if endpoint.peer_id is not None:
            known = self.connections.get(endpoint.peer_id)
            if known is not None and known.is_open:
                return known
        return next(
            (c for c in self.connections.values() if c.endpoint == endpoint.key and c.is_open),
            None,
        )

    def _open_connections(self) -> int:
        """Open connections plus those being set up (so parallel dials cannot overshoot)."""
        open_now = sum(1 for connection in self.connections.values() if connection.is_open)
        return open_now + self._connecting

    def _has_peer_for(self, share: Share) -> bool:
        return any(
            share.share_id in c.sync.doc_ids and c.is_open for c in self.connections.values()
        )

    def _should_dial(self, endpoint: Endpoint, wanted: list[Share]) -> bool:
        """One side dials: the one with the smaller mDNS name, or a joiner waiting for state.

        Past ``max_peers`` connections nobody new is dialled: shares then reach further
        members through gossip over the partial mesh.
        """
        if any(s.state is ShareState.JOINING and not self._has_peer_for(s) for s in wanted):
            return True
        if self._open_connections() >= self.config.max_peers:
            return False
        if endpoint.key.startswith("signal:") and self._signal is not None:
            return self._signal.instance < endpoint.key.removeprefix("signal:")
        if endpoint.properties is None or self._announcer is None:
            return True
        return self._announcer.name < endpoint.key

    async def _dial(self, endpoint: Endpoint, share: Share) -> None:
        self._connecting += 1
        try:
            pipe = await endpoint.open_pipe()
            try:
                await pipe.send(envelope("member"))
                await expect_ok(pipe)
                machine = MemberInitiator(share.share_id, share.record.secret, self.identity)
                auth = await run_handshake(pipe, machine)
                assert isinstance(auth, Authenticated)
                link = await self._offer_link(pipe, auth)
            finally:
                await pipe.close()
            endpoint.peer_id = _stable_id(auth.peer_daemon_id)
            await self._adopt_link(link, auth, self.daemon_id, endpoint.key)
        except TooManyPeers:
            logger.info("%s has as many connections as it accepts: trying others", endpoint.key)
            endpoint.busy()
        except Exception as exc:  # any failure: back off and retry later
            logger.info("connecting to %s failed: %s", endpoint.key, exc)
            endpoint.failed()
            if not self._has_peer_for(share):
                share.last_error = f"cannot connect to a member: {_describe(exc)}"
        finally:
            endpoint.dialling = False
            self._connecting -= 1

    async def _offer_link(self, pipe: BytePipe, auth: Authenticated) -> PeerLink:
        link, offer = await PeerLink.offer(self.ice)
        try:
            await pipe.send(auth.channel.seal(offer.encode()))
            answer = auth.channel.open(await pipe.recv(HANDSHAKE_TIMEOUT_S)).decode()
            await link.accept_answer(answer)
            await link.wait_open(LINK_OPEN_TIMEOUT_S)
        except BaseException:
            await link.close()
            raise
        return link

    async def _answer_link(self, pipe: BytePipe, auth: Authenticated) -> PeerLink:
        offer = auth.channel.open(await pipe.recv(HANDSHAKE_TIMEOUT_S)).decode()
        link, answer = await PeerLink.answer(self.ice, offer)
        try:
            await pipe.send(auth.channel.seal(answer.encode()))
            await link.wait_open(LINK_OPEN_TIMEOUT_S)
        except BaseException:
            await link.close()
            raise
        return link

    async def _adopt_link(
        self, link: PeerLink, auth: Authenticated, initiator: str, endpoint: str | None
    ) -> None:
        if _stable_id(auth.peer_daemon_id) == self.daemon_id:
            await link.close()
            return
        connection = PeerConnection(
            link,
            auth.peer_daemon_id,
            initiator,
            identity=self.identity,
            lookup=self._lookup,
            on_events=self._on_peer_events,
            on_share=self._on_peer_share,
            on_rekey=self._on_rekey,
            max_queued_bytes=self.config.max_queued_bytes,
            endpoint=endpoint,
            on_awareness=self.rooms.awareness_from_peer,  # issue 12: Jupyter rooms' awareness
        )
        if not await self._register(connection):
            return
        self._spawn(self._run_connection(connection), f"peer {connection.peer_id}")
        await self._on_peer_share(connection, auth.share_id)

    async def _register(self, connection: PeerConnection) -> bool:
        """One connection per pair of daemons: a duplicate keeps a deterministic winner."""
        existing = self.connections.get(connection.peer_id)
        if existing is not None and existing.is_open:
            newer_wins = (
                existing.peer_identity != connection.peer_identity  # the peer restarted
                or existing.initiator_id == connection.initiator_id
                or min(existing.initiator_id, connection.initiator_id) == connection.initiator_id
            )
            loser = existing if newer_wins else connection
            await loser.close()
            if loser is connection:
                return False
        self.connections[connection.peer_id] = connection
        return True

    async def _run_connection(self, connection: PeerConnection) -> None:
        try:
            await connection.run()
        finally:
            if self.connections.get(connection.peer_id) is connection:
                del self.connections[connection.peer_id]
            endpoint = self.endpoints.get(connection.endpoint or "")
            if endpoint is not None:
                endpoint.connection_ended(time.monotonic() - connection.opened_at)
            self._poke.set()

    def _lookup(self, nonce: bytes, tag: bytes) -> tuple[bytes, bytes] | None:
        secrets_by_id = {s.share_id: s.record.secret for s in self.shares.values()}
        return share_lookup(secrets_by_id)(nonce, tag)

    async def _on_peer_share(self, connection: PeerConnection, share_id: bytes) -> None:
        share = self.shares.get(share_id)
        if share is None or share.state is ShareState.CLOSED:
            return
        if connection.peer_id not in share.record.members:
            share.record.members.append(connection.peer_id)
            share.record.save(self.home)
        await connection.add_doc(share_id, share.file.doc)

    async def _on_peer_events(
        self, connection: PeerConnection, events: Sequence[SyncEvent]
    ) -> None:
        for event in events:
            if isinstance(event, Send):
                await connection.send(event.messages)
            elif isinstance(event, RemoteUpdate):
                await self._on_remote_update(connection, event)
            elif isinstance(event, Synced):
                share = self.shares.get(event.doc_id)
                if share is not None:
                    share.schedule_write()
            elif isinstance(event, ProtocolViolation):
                await connection.fail(event.reason)
            elif isinstance(event, PeerError):
                logger.warning("peer %s closed with: %s", connection.peer_id, event.reason)
                await connection.close()

    async def _on_remote_update(self, connection: PeerConnection, event: RemoteUpdate) -> None:
        share = self.shares.get(event.doc_id)
        if share is None:
            return
        try:
            share.remote_update(event.update)
        except P2PError as exc:  # kept in memory and retried by the writer (disk full...)
            share.last_error = exc.message
        # Relayed either way: the peer that made it has it durably, and the rest of a
        # partial mesh must not wait for a reconnection to get it.
        await self._broadcast(share, event.update, exclude=connection.peer_id)

    # --- the rendezvous listener ---------------------------------------------------------

    async def _on_pipe(self, pipe: BytePipe) -> None:
        try:
            opening = parse_envelope(await pipe.recv(HANDSHAKE_TIMEOUT_S))
            if opening.get("kind") == "invite":
                await self._host_invitation(pipe, str(opening.get("nameplate", "")))
            elif opening.get("kind") == "member":
                await self._answer_member(pipe)
        except Exception as exc:  # a bad dialler must never hurt the daemon
            logger.info("rendezvous from %s ended: %s", pipe.remote_address, exc)

    async def _host_invitation(self, pipe: BytePipe, nameplate: str) -> None:
        try:
            invitation = self.invitations.find(nameplate)
        except P2PError as exc:
            await pipe.send(error_reply(exc))
            return
        share = self.shares[invitation.share_id]
        self.invitations.begin(invitation)  # so two joiners cannot both use a 1-use code
        host = InviteHost(
            invitation.code,
            self._welcome_for(share),
            admit=lambda: self.invitations.reserve_guess(invitation),
        )
        try:
            await pipe.send(ok_reply())
            await run_handshake(pipe, host)
            logger.info("a new member joined %s", share.path)
        finally:
            # Settled whatever ended the exchange: a closed pipe, junk or a timeout after
            # the PAKE answer costs an attempt like a wrong confirmation does.
            self.invitations.end(
                invitation, guessed=host.guessed, proven=host.proven, peer=pipe.remote_address
            )
            await self._refresh_discovery()

    @staticmethod
    def _welcome_for(share: Share) -> bytes:
        return json.dumps(
            {
                "share_id": share.share_id.hex(),
                "secret": share.record.secret.hex(),
                "name": share.record.name,
                "members": share.record.members,
            }
        ).encode()

    async def _answer_member(self, pipe: BytePipe) -> None:
        if self._open_connections() >= 2 * self.config.max_peers:
            await pipe.send(error_reply(TooManyPeers()))
            return
        self._connecting += 1
        try:
            await pipe.send(ok_reply())
            auth = await run_handshake(pipe, MemberResponder(self._lookup, self.identity))
            assert isinstance(auth, Authenticated)
            link = await self._answer_link(pipe, auth)
        finally:
            self._connecting -= 1
        await self._adopt_link(link, auth, _stable_id(auth.peer_daemon_id), None)

    async def _redeem(self, code: JoinCode, deadline: float) -> bytes:
        """Find the daemon offering ``code`` and run the PAKE with it; the sealed welcome."""
        tried: set[str] = set()
        topic = invite_topic(code.nameplate)
        if self._signal is not None:
            self._invite_hosts[topic] = []
            await self._refresh_discovery()
        try:
            return await self._redeem_until(code, deadline, tried, topic)
        finally:
            self._invite_hosts.pop(topic, None)
            await self._refresh_discovery()

    async def _redeem_until(
        self, code: JoinCode, deadline: float, tried: set[str], topic: str
    ) -> bytes:
        next_probe = 0.0
        while time.monotonic() < deadline:
            if self._signal is not None and time.monotonic() >= next_probe:
                await self._signal.announce(topic)
                next_probe = time.monotonic() + 1.0
            for endpoint in self._endpoints_offering(code.nameplate, topic):
                if endpoint.key in tried:
                    continue
                tried.add(endpoint.key)
                try:
                    return await self._redeem_at(endpoint, code)
                except (NoSuchInvitation, RendezvousError, TimeoutError) as exc:
                    logger.info("redeeming at %s: %s", endpoint.key, _describe(exc))
                    continue
            await asyncio.sleep(0.1)
        raise NoSuchInvitation()

    def _endpoints_offering(self, nameplate: str, topic: str) -> Iterator[Endpoint]:
        for endpoint in list(self.endpoints.values()):
            nameplates = endpoint.nameplates
            if nameplates is None or nameplate in nameplates:
                yield endpoint
        for peer in self._invite_hosts.get(topic, []):
            yield Endpoint(f"signal:{peer}", self._signal_opener(topic, peer))

    async def _redeem_at(self, endpoint: Endpoint, code: JoinCode) -> bytes:
        pipe = await endpoint.open_pipe()
        try:
            await pipe.send(envelope("invite", nameplate=code.nameplate))
            await expect_ok(pipe)
            try:
                welcomed = await run_handshake(pipe, InviteJoiner(code))
            except Refused as refused:
                raise remote_error(refused.kind) from None
            assert isinstance(welcomed, Welcomed)
            return welcomed.payload
        finally:
            await pipe.close()


def _stable_id(identity: str) -> str:
    """The daemon id in a handshake identity ``<daemon id>/<run id>``."""
    return identity.partition("/")[0]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, P2PError):
        return exc.message
    if isinstance(exc, TimeoutError):
        return "it stopped answering"
    return f"{type(exc).__name__}: {exc}"


class _HomeLock:
    """One daemon per home: an exclusive lock held for the daemon's lifetime."""

    def __init__(self, home: Path) -> None:
        self._file = (home / "daemon.lock").open("a")

    def acquire(self) -> None:
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise control.DaemonAlreadyRunning() from None


def _configure_logging(home: Path, level: int) -> None:
    handler = logging.FileHandler(paths.log_file(home))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("aioice", "aiortc", "websockets", "zeroconf"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


async def _serve(home: Path, config: DaemonConfig) -> None:
    daemon = Daemon(home, config)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, daemon.request_stop)
    await daemon.start()
    await daemon.run_until_stopped()


def run_daemon(home: Path, log_level: int = logging.INFO) -> None:
    """Run the daemon of ``home`` in the foreground until ``p2prtc stop`` or a signal."""
    # The store, the log and everything else we keep: owner only. Notebooks we create get
    # the user's own umask, as their editor would.
    files.use_umask_for_new_files(os.umask(0o077))
    lock = _HomeLock(home)
    lock.acquire()
    _configure_logging(home, log_level)
    asyncio.run(_serve(home, DaemonConfig.from_env()))
