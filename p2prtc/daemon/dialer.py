"""The dialer: keeps a connection to every reachable daemon that shares something with us.

It owns the reconcile loop (dial whom the mesh rules say, authenticate further shares on
open connections), both ends of a member rendezvous (the listener's admission, the
handshake, on a LAN pipe the share's first sync round (core/pipesync.py), then the link:
links.py) and the life of each adopted connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import TYPE_CHECKING

from p2prtc.adapters.rendezvous import MAX_MESSAGE_SIZE as PIPE_MESSAGE_BYTES
from p2prtc.core.framing import Progress
from p2prtc.core.handshake import Authenticated, MemberInitiator, MemberResponder
from p2prtc.core.keys import SEAL_OVERHEAD, epoch_of
from p2prtc.core.mesh import (
    Admission,
    HeldLink,
    admission,
    is_newcomer,
    link_to_shed,
    should_dial,
)
from p2prtc.core.messages import Opening, OpeningKind
from p2prtc.core.names import name_feature
from p2prtc.core.pipesync import PIPE_SYNC_FEATURE, PipeSync
from p2prtc.daemon.config import DaemonConfig
from p2prtc.daemon.discovery import Discovery
from p2prtc.daemon.endpoints import Endpoint
from p2prtc.daemon.links import LinkLoader, answer_link, ice_config, offer_link
from p2prtc.daemon.peer import AwarenessHandler, PeerConnection, RekeyHandler, features_of
from p2prtc.daemon.pipes import (
    BytePipe,
    TooManyPeers,
    error_reply,
    expect_ok,
    ok_reply,
    run_handshake,
    run_pipe_sync,
)
from p2prtc.daemon.registry import Registry
from p2prtc.daemon.share import Share, ShareState
from p2prtc.daemon.syncing import Syncing
from p2prtc.daemon.tasks import Spawn
from p2prtc.errors import describe

if TYPE_CHECKING:  # imported when the first link is made: see links.WEBRTC
    from p2prtc.adapters.webrtc import PeerLink

logger = logging.getLogger(__name__)

RECONCILE_INTERVAL_S = 1.0
# Anti-entropy on live connections: a state-vector exchange per shared doc this often.
RESYNC_INTERVAL_S = 30.0


# What this release understands beyond the first one's frames, told in the handshake
# identity (``<daemon id>/<run id>/<feature>...``): a peer sends a frame kind only to daemons
# that named it (a release without AWARENESS frames drops a connection that carries one),
# and runs the first sync round over a LAN pipe only with daemons that named ``pipesync``.
FEATURES = ("awareness", PIPE_SYNC_FEATURE)
# A sealed chunk of a first state fills a rendezvous message.
PIPE_CHUNK_BYTES = PIPE_MESSAGE_BYTES - SEAL_OVERHEAD
# A link waits this long at most for the joined file's first write before loading WebRTC
# (a write that fails is retried; the link must not wait for it forever).
JOINED_WRITE_WAIT_S = 10.0


class Identity:
    """Who we are in handshakes: the stable daemon id plus this run's, our features and our
    name (core/names.py).

    Peers tell a restarted daemon's new link from a dead one of its previous run by it. It
    stays the same for the whole run (a peer checks that every AUTH on a connection comes
    from the identity that opened it): a new name is told after a restart.
    """

    def __init__(self, daemon_id: str, run_id: str, name: str) -> None:
        self.daemon_id = daemon_id
        self.name = name
        self.handshake_id = "/".join((daemon_id, run_id, *FEATURES, name_feature(name)))


class Dialer:
    """Dials and answers members; every adopted connection is run until it ends."""

    def __init__(
        self,
        config: DaemonConfig,
        identity: Identity,
        registry: Registry,
        discovery: Discovery,
        syncing: Syncing,
        links: LinkLoader,
        *,
        on_rekey: RekeyHandler,
        wake: asyncio.Event,
        spawn: Spawn,
        on_awareness: AwarenessHandler | None = None,
    ) -> None:
        self.config = config
        self._identity = identity
        self._registry = registry
        self._connections = registry.connections
        self._discovery = discovery
        self._syncing = syncing
        self._links = links
        self._on_rekey = on_rekey
        self._on_awareness = on_awareness
        self._wake = wake
        self._spawn = spawn
        self._rng = random.Random()
        # Share id -> when we last saw no open link carry it (``mesh.is_newcomer``).
        self._peerless_since: dict[bytes, float] = {}
        self._ice = ice_config(config)
        self._last_resync = time.monotonic()
        self._first_syncs: set[PipeSync] = set()  # running on rendezvous pipes

    # --- the reconcile loop --------------------------------------------------------------

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), RECONCILE_INTERVAL_S)
            self._wake.clear()
            await self._discovery.tick()
            if time.monotonic() - self._last_resync > RESYNC_INTERVAL_S:
                self._last_resync = time.monotonic()
                await self._syncing.resync_all()
            for endpoint in list(self._discovery.endpoints.values()):
                await self._reconcile(endpoint)

    async def _reconcile(self, endpoint: Endpoint) -> None:
        epoch = epoch_of(time.time())
        wanted = [
            share
            for share in self._registry.shares.values()
            if share.state is not ShareState.CLOSED
            and share.record.cut_off is None  # told it was removed: nothing to dial for
            and endpoint.may_hold(share.share_id, share.record.secret, epoch)
        ]
        if not wanted:
            return
        connection = self._connection_for(endpoint)
        if connection is not None:
            for share in wanted:
                await connection.control.authenticate_share(share.share_id, share.record.secret)
            return
        if endpoint.dialling or not endpoint.backoff.due(time.monotonic()):
            return
        # A share no open link carries makes us a newcomer: listeners make room for us.
        newcomer_for = [share for share in wanted if self._is_newcomer(share)]
        retired = any(endpoint.retired(share.record.secret, epoch) for share in wanted)
        if not should_dial(
            newcomer=bool(newcomer_for),
            open_connections=self._connections.open_count(),
            dials_in_progress=sum(e.dialling for e in self._discovery.endpoints.values()),
            max_peers=self.config.max_peers,
            ranks=None if retired else self._discovery.ranks(endpoint),
        ):
            return
        endpoint.dialling = True
        # Counted as a connection being set up at once, not when the task starts: a newcomer
        # decides its dials to every member in one pass, and each decision must see the
        # ones before it, or it dials them all and ends over its bound.
        self._connections.connecting += 1
        share = (newcomer_for or wanted)[0]  # the handshake proves the share we need a link for
        self._spawn(self._dial(endpoint, share, bool(newcomer_for)), f"dial {endpoint.key}")

    def _is_newcomer(self, share: Share) -> bool:
        now = time.monotonic()
        if self._connections.has_peer_for(share):
            self._peerless_since.pop(share.share_id, None)
            return False
        since = self._peerless_since.setdefault(share.share_id, now)
        return is_newcomer(joining=share.state is ShareState.JOINING, peerless_for_s=now - since)

    def _connection_for(self, endpoint: Endpoint) -> PeerConnection | None:
        """Our link to that daemon, whichever side dialled it."""
        if endpoint.peer_id is not None:
            known = self._connections.get(endpoint.peer_id)
            if known is not None and known.is_open:
                return known
        return next(
            (c for c in self._connections.all() if c.endpoint == endpoint.key and c.is_open),
            None,
        )

    # --- the two ends of a member rendezvous ---------------------------------------------

    async def _dial(self, endpoint: Endpoint, share: Share, newcomer: bool) -> None:
        """Dial a member (counted in ``connecting`` by the caller until this ends)."""
        try:
            pipe = await endpoint.open_pipe()
            try:
                await pipe.send(Opening(OpeningKind.MEMBER, joining=newcomer).encode())
                await expect_ok(pipe)
                machine = MemberInitiator(
                    share.share_id, share.record.secret, self._identity.handshake_id
                )
                auth = await run_handshake(pipe, machine)
                assert isinstance(auth, Authenticated)
                await self._first_state(pipe, auth)
                await self._links_ready(auth.share_id)
                link = await offer_link(pipe, auth, self._ice)
            finally:
                # Not waited for: its closing handshake waits for the other daemon, whose
                # loop may be busy a while (writing a big notebook it was just sent).
                self._spawn(pipe.close(), f"close pipe to {endpoint.key}")
            endpoint.peer_id = stable_id(auth.peer_daemon_id)
            await self._adopt_link(link, auth, self._identity.daemon_id, endpoint.key)
        except TooManyPeers:
            logger.info("%s has as many connections as it accepts: trying others", endpoint.key)
            endpoint.backoff.busy(time.monotonic(), self._rng)
        except Exception as exc:  # any failure: back off and retry later
            logger.info("connecting to %s failed: %s", endpoint.key, exc)
            endpoint.backoff.failed(time.monotonic())
            if not self._connections.has_peer_for(share):
                share.last_error = f"cannot connect to a member: {describe(exc)}"
        finally:
            endpoint.dialling = False
            self._connections.connecting -= 1

    async def answer_member(self, pipe: BytePipe, *, newcomer: bool) -> None:
        """A member dialled our rendezvous listener: authenticate it and answer its offer.

        ``newcomer``: it says it has no link to the share yet (``mesh.admission``). Only
        once it has proven membership may it make us shed a link.
        """
        # Only authenticated connections count against the budget: pipes still proving
        # nothing are bounded apart (the app's handshake slots).
        if not self._may_admit(newcomer):
            await pipe.send(error_reply(TooManyPeers()))
            return
        await pipe.send(ok_reply())
        machine = MemberResponder(self._registry.lookup, self._identity.handshake_id)
        auth = await run_handshake(pipe, machine)
        assert isinstance(auth, Authenticated)
        # Checked again: answers authenticated meanwhile may have taken the last places.
        taken, shed = self._take_place(newcomer)
        if not taken:
            logger.info("%s authenticated, but we are full now: closing", pipe.remote_address)
            return
        try:
            if shed is not None:
                logger.info("full: closing the link to %s to admit a newcomer", shed.label)
                await shed.close()
            await self._first_state(pipe, auth)
            await self._links_ready(auth.share_id)
            link = await answer_link(pipe, auth, self._ice)
            # Still counted as being set up until registered: no other answer takes its place.
            peer_id = stable_id(auth.peer_daemon_id)
            await self._adopt_link(link, auth, peer_id, None, came_as_newcomer=newcomer)
        finally:
            self._connections.connecting -= 1

    async def _first_state(self, pipe: BytePipe, auth: Authenticated) -> None:
        """The share's first sync round over this pipe, before the link, when both sides
        can run it: a LAN pipe, and a peer that names the feature (core/pipesync.py).
        Decided alike on both sides; whether we give the peer our state is ours to decide
        (as on the link). The peer's state, if it gave it, is merged at once: a joiner's
        file does not wait for WebRTC."""
        if not pipe.direct or PIPE_SYNC_FEATURE not in features_of(auth.peer_daemon_id):
            return
        peer_id = stable_id(auth.peer_daemon_id)
        doc = self._syncing.doc_to_sync(peer_id, auth.share_id, auth.secret)
        if self._connections.refuses_claim(peer_id, auth.share_id):
            doc = None  # its link will be refused: it gets nothing before
        first_sync = PipeSync(auth.share_id, doc, auth.channel, max_chunk=PIPE_CHUNK_BYTES)
        started = time.perf_counter()
        self._first_syncs.add(first_sync)  # ``receiving`` tells how far it has come
        try:
            await run_pipe_sync(pipe, first_sync)
        finally:
            self._first_syncs.discard(first_sync)
        logger.info(
            "first sync over the rendezvous pipe with %s: received %d bytes in %.0f ms",
            pipe.remote_address,
            len(first_sync.received or b""),
            (time.perf_counter() - started) * 1000,
        )
        if first_sync.received is not None:
            address = pipe.remote_address
            where = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
            await self._syncing.on_first_state(peer_id, auth.share_id, first_sync.received, where)

    async def _links_ready(self, share_id: bytes) -> None:
        """Until the WebRTC stack is imported (in its thread). A share being joined whose
        state has come (over the pipe) is written first: the import competes with the write
        for the interpreter, and the user's ``join`` waits for the write, not for the link."""
        share = self._registry.shares.get(share_id)
        if share is not None and share.state is ShareState.JOINING and share.file.has_notebook:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(share.ready.wait(), JOINED_WRITE_WAIT_S)
        await self._links.ready()

    def receiving(self, share_id: bytes) -> Progress | None:
        """How far a state of the share coming over a rendezvous pipe has come, if one is."""
        coming = (sync.progress for sync in self._first_syncs if sync.doc_id == share_id)
        return next((progress for progress in coming if progress is not None), None)

    def _may_admit(self, newcomer: bool) -> bool:
        """Whether one more member fits, counting a link we could shed for a newcomer."""
        decision = self._admission(newcomer)
        if decision is Admission.SHED_ONE:
            return self._link_to_shed() is not None
        return decision is Admission.ACCEPT

    def _take_place(self, newcomer: bool) -> tuple[bool, PeerConnection | None]:
        """Takes a place for one more member at once, if one is left (or, for a newcomer
        when full, can be made): whether it took one, and the link to close for it.

        Decided and taken without a pause (the place counts as a connection being set up):
        an answer that waited for a shed link to close would otherwise find its place taken
        by another, and the listener would end one over its bound.
        """
        decision = self._admission(newcomer)
        shed = None
        if decision is Admission.SHED_ONE:
            victim = self._link_to_shed()
            if victim is None:
                return False, None
            shed = self._connections.get(victim)
        elif decision is Admission.REFUSE:
            return False, None
        self._connections.connecting += 1
        return True, shed

    def _admission(self, newcomer: bool) -> Admission:
        return admission(
            open_connections=self._connections.open_count(),
            max_peers=self.config.max_peers,
            newcomer=newcomer,
        )

    def _link_to_shed(self) -> str | None:
        now = time.monotonic()
        return link_to_shed(
            HeldLink(c.peer_id, now - c.opened_at, c.came_as_newcomer)
            for c in self._connections.all()
            if c.is_open
        )

    # --- adopted connections -------------------------------------------------------------

    async def _adopt_link(
        self,
        link: PeerLink,
        auth: Authenticated,
        initiator: str,
        endpoint: str | None,
        *,
        came_as_newcomer: bool = False,
    ) -> None:
        if stable_id(auth.peer_daemon_id) == self._identity.daemon_id:
            await link.close()
            return
        connection = PeerConnection(
            link,
            auth.peer_daemon_id,
            initiator,
            identity=self._identity.handshake_id,
            lookup=self._registry.lookup,
            on_events=self._syncing.on_peer_events,
            on_share=self._syncing.on_peer_share,
            on_rekey=self._on_rekey,
            max_queued_bytes=self.config.max_queued_bytes,
            endpoint=endpoint,
            on_awareness=self._on_awareness,
            came_as_newcomer=came_as_newcomer,
        )
        if not await self._connections.register(connection, auth.share_id):
            return
        logger.info("connected to %s", connection.label)
        self._spawn(self._run_connection(connection), f"peer {connection.peer_id}")
        await self._syncing.on_peer_share(connection, auth.share_id, auth.secret)

    async def _run_connection(self, connection: PeerConnection) -> None:
        try:
            await connection.run()
        finally:
            self._connections.unregister(connection)
            endpoint = self._discovery.endpoints.get(connection.endpoint or "")
            if endpoint is not None:
                lasted_s = time.monotonic() - connection.opened_at
                endpoint.backoff.connection_ended(time.monotonic(), lasted_s)
            self._wake.set()

    async def close(self) -> None:
        for connection in self._connections.all():
            await connection.close()


def stable_id(identity: str) -> str:
    """The daemon id in a handshake identity ``<daemon id>/<run id>``."""
    return identity.partition("/")[0]
