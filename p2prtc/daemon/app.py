"""The app: builds the daemon's services, wires them, and starts and stops them.

Nothing here decides anything: each concern lives in its own service (registry, discovery,
dialer, syncing, joining, membership, commands); see docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from pathlib import Path

from p2prtc import paths
from p2prtc.adapters.heap import HeapTrimmer
from p2prtc.adapters.rendezvous import RendezvousServer
from p2prtc.adapters.store import UpdateStore
from p2prtc.adapters.watcher import ChangeKind, FileWatcher
from p2prtc.core import roomlink
from p2prtc.core.mesh import HandshakeSlots
from p2prtc.core.messages import Opening, OpeningKind
from p2prtc.core.names import label
from p2prtc.daemon import control
from p2prtc.daemon.commands import Commands
from p2prtc.daemon.config import DaemonConfig
from p2prtc.daemon.dialer import Dialer, Identity
from p2prtc.daemon.discovery import Discovery
from p2prtc.daemon.document import SharedFile
from p2prtc.daemon.invitations import Invitations
from p2prtc.daemon.joining import Joining
from p2prtc.daemon.links import LinkLoader
from p2prtc.daemon.membership import Membership
from p2prtc.daemon.memory import keep_heap_small
from p2prtc.daemon.names import daemon_name
from p2prtc.daemon.pipes import HANDSHAKE_TIMEOUT_S, BytePipe
from p2prtc.daemon.registry import Registry
from p2prtc.daemon.renames import RENAMED_WHILE_STOPPED, Gone
from p2prtc.daemon.rooms import RoomLinks
from p2prtc.daemon.share import ShareState
from p2prtc.daemon.state import ShareRecord, load_daemon_id, load_records
from p2prtc.daemon.syncing import Syncing
from p2prtc.daemon.tasks import Tasks
from p2prtc.errors import P2PError

logger = logging.getLogger(__name__)


class Daemon:
    """Everything one ``P2PRTC_HOME`` runs."""

    def __init__(self, home: Path, config: DaemonConfig) -> None:
        self.home = home
        self.identity = Identity(load_daemon_id(home), secrets.token_hex(4), daemon_name(home))
        self.tasks = Tasks()
        self.watcher = FileWatcher()
        self.invitations = Invitations()
        self._handshakes = HandshakeSlots()
        self.links = LinkLoader()
        self.registry = Registry(home, self.watcher)
        self.rooms = RoomLinks(
            self.registry.share_for_path,
            self.registry.connections.broadcast,
            self.registry.connections.peers_of,
            config.max_queued_bytes,
        )
        wake = asyncio.Event()  # something changed: the dialer reconciles now
        self.discovery = Discovery(
            config,
            self.registry,
            self.invitations,
            on_pipe=self._on_pipe,
            poke=wake.set,
        )
        self.registry.on_changed(self.discovery.refresh)
        self.registry.on_changed(self._prepare_links_for_shares)
        daemon_id = self.identity.daemon_id
        self.registry.names.learn(daemon_id, self.identity.name)  # members lists us too
        self.membership = Membership(daemon_id, self.registry)
        self.syncing = Syncing(self.registry)
        self.dialer = Dialer(
            config,
            self.identity,
            self.registry,
            self.discovery,
            self.syncing,
            self.links,
            on_rekey=self.membership.on_rekey,
            wake=wake,
            spawn=self.tasks.spawn,
            on_awareness=self.rooms.awareness_from_peer,
        )
        self.joining = Joining(
            daemon_id,
            self.registry,
            self.invitations,
            self.discovery,
            self.discovery.relay,
            wake,
            self.links.prepare_links,
            self.dialer.receiving,
        )
        self.commands = Commands(
            daemon_id,
            self.identity.name,
            self.registry,
            self.invitations,
            self.discovery,
            self.joining,
            self.membership,
            rendezvous_port=lambda: self._rendezvous.port if self._rendezvous else None,
            request_stop=self.request_stop,
            rooms=self.rooms,
        )
        self._config = config
        self._stop = asyncio.Event()
        self._control = control.ControlServer(
            paths.control_socket(home), self.commands.handle, {roomlink.ATTACH: self.rooms.serve}
        )
        self._rendezvous: RendezvousServer | None = None

    async def start(self) -> None:
        for record in load_records(self.home):
            await self._resume(record)
        self._rendezvous = await RendezvousServer.start(
            self._config.listen_host, self._config.port, on_pipe=self._on_pipe
        )
        await self.discovery.start(self._rendezvous.port)
        await self.watcher.start()
        self.tasks.spawn(self._watch_files(), "watcher")
        self.tasks.spawn(self.dialer.run(), "reconcile")
        trimmer = HeapTrimmer.load()
        if trimmer is not None:
            self.tasks.spawn(keep_heap_small(trimmer), "memory")
        await self._control.start()
        await self._prepare_links_for_shares()
        self.links.preload_link_dependencies()
        logger.info(
            "daemon %s started: rendezvous port %s, %d shares",
            label(self.identity.daemon_id, self.identity.name),
            self._rendezvous.port,
            len(self.registry.shares),
        )

    async def run_until_stopped(self) -> None:
        await self._stop.wait()
        await self.shutdown()

    def request_stop(self) -> None:
        self._stop.set()

    async def stop_requested(self) -> None:
        """Until someone asks the daemon to stop (a signal, ``p2prtc stop``)."""
        await self._stop.wait()

    async def shutdown(self) -> None:
        await self._control.close()
        self.tasks.cancel_all()
        await self.dialer.close()
        await self.links.close()
        await self.discovery.close()
        if self._rendezvous is not None:
            with contextlib.suppress(Exception):
                await self._rendezvous.close()
        await self.watcher.close()
        for share in list(self.registry.shares.values()):
            await share.close()
        logger.info("daemon stopped")

    async def _prepare_links_for_shares(self) -> None:
        """Peers will link: load the WebRTC stack. Not for a daemon with no share (it stays
        small), nor for one whose only share is being joined: the joined file does not wait
        for WebRTC (its state comes over the rendezvous pipe), and the import would slow its
        write; the link loads it when it comes, once the file is written."""
        if any(share.state is not ShareState.JOINING for share in self.registry.shares.values()):
            self.links.prepare_links()

    async def _resume(self, record: ShareRecord) -> None:
        try:
            store = UpdateStore(record.store_path(self.home))
            file = SharedFile.restore(record.path, store, self.identity.daemon_id)
        except P2PError as exc:
            logger.error("cannot resume %s: %s", record.path, exc)
            return
        state = ShareState.ACTIVE if record.joined else ShareState.JOINING
        share = self.registry.open_share(record, file, state)
        if state is ShareState.ACTIVE:
            if not record.path.exists():  # renamed while the daemon was stopped?
                await share.missing.follow_if_renamed(Gone(at=RENAMED_WHILE_STOPPED))
            await self.registry.watch(share)
            try:
                file.catch_up()  # persisted; peers get it from anti-entropy when they connect
            except P2PError as exc:
                share.last_error = exc.message

    async def _watch_files(self) -> None:
        async for event in self.watcher:
            share = self.registry.share_for_path(event.path)
            if share is None:
                continue
            if event.kind is ChangeKind.DELETED:
                share.missing.noticed(event.moved_to)
                continue
            try:
                await share.file_changed()
            except Exception as exc:  # one bad file must never stop watching the others
                logger.exception("ingesting %s failed", share.path)
                share.last_error = f"internal error while reading the file: {exc}"

    async def _on_pipe(self, pipe: BytePipe) -> None:
        """A dialler on our rendezvous listener (LAN or relay): to the service it asks for."""
        source = source_of(pipe.remote_address)
        if not self._handshakes.take(source):
            logger.info("too many rendezvous pipes from %s in their handshake: closing", source)
            return  # the pipe closes when this returns
        try:
            opening = Opening.decode(await pipe.recv(HANDSHAKE_TIMEOUT_S))
            if opening.kind is OpeningKind.INVITE:
                await self.joining.host_invitation(pipe, opening.nameplate)
            else:
                await self.dialer.answer_member(pipe, newcomer=opening.joining)
        except Exception as exc:  # a bad dialler must never hurt the daemon
            logger.info("rendezvous from %s ended: %s", pipe.remote_address, exc)
        finally:
            self._handshakes.release(source)


def source_of(remote_address: object) -> str:
    """Who a pipe comes from, for the per-source bound: a LAN pipe's host, a relay pipe's
    (self-chosen) instance, which the relay's own limits and the total bound cover."""
    if isinstance(remote_address, tuple) and remote_address:
        return str(remote_address[0])
    return str(remote_address)
