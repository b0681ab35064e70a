"""Jupyter collaboration rooms attached to shares over the control socket (the room link).

A room's updates are the daemon's own edits: applied to the share's doc, persisted, written
to the file by the share's writer and sent to peers. Every other change of the doc (peers,
saves of other editors, other rooms) is streamed to the room as it happens. The daemon stays
the file's only writer while a room is attached (the Jupyter side stops the room's own saves).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from pycrdt import Doc, Subscription, TransactionEvent

from p2prtc import control
from p2prtc.core import roomlink
from p2prtc.core.awareness import mark_machine
from p2prtc.core.ratelimit import TokenBucket
from p2prtc.daemon.peer import PeerConnection
from p2prtc.daemon.peer_control import AWARENESS_BURST, AWARENESS_RATE
from p2prtc.daemon.share import Share, ShareState
from p2prtc.errors import P2PError

logger = logging.getLogger(__name__)

# (share, update) -> None: send an update made here to every peer of the share.
Broadcast = Callable[[Share, bytes], Awaitable[None]]
ShareForPath = Callable[[Path], Share | None]
PeersOf = Callable[[Share], Iterable[PeerConnection]]
# (link, awareness update) -> None: a room's awareness, for the share's other rooms and peers.
AwarenessRelay = Callable[["RoomLink", bytes], Awaitable[None]]


class NotSharedForRoom(P2PError):
    """This file is not shared by this daemon: the room stays a plain Jupyter room."""


class ShareNotReady(P2PError):
    """This file is still being joined: its room attaches once the notebook is there."""


class RoomLink:
    """One attached room: the stream between a share's doc and a Jupyter room."""

    def __init__(
        self,
        share: Share,
        label: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_queued_bytes: int,
    ) -> None:
        self.share = share
        self.label = label
        self._reader = reader
        self._writer = writer
        self._outgoing: asyncio.Queue[bytes] = asyncio.Queue()
        # What may wait for this room (P2PRTC_MAX_QUEUED_BYTES, as for a peer): a room further
        # behind (its Jupyter server stuck) is dropped; it attaches again and gets what it
        # missed from the state vectors.
        self._max_queued_bytes = max_queued_bytes
        self._queued_bytes = 0
        # Awareness (cursors, names) coming faster than this is dropped, never queued.
        self.awareness_in = TokenBucket(AWARENESS_RATE, AWARENESS_BURST)
        # True while this room's own update is applied: the doc observer (called during the
        # commit, synchronously) must not echo it back.
        self._applying = False
        self._subscription: Subscription | None = None

    @property
    def doc(self) -> Doc[Any]:
        return self.share.file.doc

    def open(self, state_vector: bytes) -> bytes:
        """Start following the doc; the answer to the attach request."""
        self._subscription = self.doc.observe(self._on_doc_change)
        missing = self.doc.get_update(state_vector)
        answer = roomlink.attach_answer(self.share.share_id, missing, self.doc.get_state())
        return control.encode_message({**answer, "ok": True})

    def close(self) -> None:
        if self._subscription is not None:
            self.doc.unobserve(self._subscription)
            self._subscription = None

    def detach(self, reason: str) -> None:
        """End the link from our side (the share was left)."""
        self._enqueue(control.encode_message(roomlink.detached_message(reason)))
        self._outgoing.put_nowait(b"")  # the sender closes the connection after it

    def send_awareness(self, update: bytes) -> None:
        self._enqueue(control.encode_message(roomlink.awareness_message(update)))

    def _on_doc_change(self, event: TransactionEvent) -> None:
        if not self._applying:
            self._enqueue(control.encode_message(roomlink.update_message(event.update)))

    def _enqueue(self, line: bytes) -> None:
        if self._queued_bytes + len(line) > self._max_queued_bytes:
            if not self._writer.is_closing():
                logger.warning("room %s does not keep up: dropping its link", self.label)
                self._writer.close()  # its receive loop ends; the room attaches again
            return
        self._queued_bytes += len(line)
        self._outgoing.put_nowait(line)

    async def send_loop(self) -> None:
        while line := await self._outgoing.get():
            self._queued_bytes -= len(line)
            self._writer.write(line)
            await self._writer.drain()
        self._writer.close()

    async def receive_loop(self, broadcast: Broadcast, relay: AwarenessRelay) -> None:
        """Apply the room's updates until it goes away; malformed input ends the link."""
        while line := await self._reader.readline():
            message = roomlink.parse_message(control.decode_message(line))
            if isinstance(message, roomlink.Update):
                await self._apply(message.update, broadcast)
            elif isinstance(message, roomlink.Awareness):
                if self.awareness_in.allow(time.monotonic()):
                    await relay(self, message.update)
            else:
                raise roomlink.RoomLinkError("a room cannot detach the daemon")

    async def _apply(self, update: bytes, broadcast: Broadcast) -> None:
        self._applying = True
        try:
            self.doc.apply_update(update)
        finally:
            self._applying = False
        self.share.remote_update(update)  # persisted with the write that shows it
        await broadcast(self.share, update)


class RoomLinks:
    """The attached rooms of every share, served on the control socket."""

    def __init__(
        self,
        share_for_path: ShareForPath,
        broadcast: Broadcast,
        peers_of: PeersOf,
        max_queued_bytes: int,
    ) -> None:
        self._share_for_path = share_for_path
        self._broadcast = broadcast
        self._peers_of = peers_of
        self._max_queued_bytes = max_queued_bytes
        self._links: set[RoomLink] = set()

    def count(self, share: Share) -> int:
        """How many live rooms are attached to ``share``."""
        return sum(1 for link in self._links if link.share is share)

    def labels(self, share: Share) -> list[str]:
        return sorted(link.label for link in self._links if link.share is share)

    async def _relay_awareness(self, source: RoomLink, update: bytes) -> None:
        """A room's awareness: to the share's other rooms here and to the peers' rooms."""
        for link in list(self._links):
            if link is not source and link.share is source.share:
                link.send_awareness(update)
        for connection in self._peers_of(source.share):
            await connection.control.send_awareness(source.share.share_id, update)

    async def awareness_from_peer(
        self, connection: PeerConnection, share_id: bytes, update: bytes
    ) -> None:
        """A peer's rooms' awareness: to this machine's rooms of the share (not relayed
        further: awareness has no ids to stop it going round a mesh), each user marked with
        the peer's name (JupyterLab shows "Anonymous Io (alice@laptop)")."""
        if not any(link.share.share_id == share_id for link in self._links):
            return
        update = mark_machine(update, connection.peer_name or connection.peer_id[:8])
        for link in list(self._links):
            if link.share.share_id == share_id:
                link.send_awareness(update)

    def share_left(self, share: Share) -> None:
        """The share stops: its rooms go back to plain Jupyter rooms."""
        for link in list(self._links):
            if link.share is share:
                link.detach("the file is no longer shared")

    async def serve(
        self,
        request: control.JsonObject,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """A stream request ``attach`` (see core.roomlink): serve it until either side ends."""
        try:
            share = self._share_for_path(Path(str(request.get("path"))))
            if share is None:
                raise NotSharedForRoom(str(request.get("path")))
            if share.state is not ShareState.ACTIVE:
                raise ShareNotReady(str(share.path))
            state_vector = roomlink.unb64(request, "state_vector")
            label = str(request.get("room", "room"))
            link = RoomLink(share, label, reader, writer, self._max_queued_bytes)
            writer.write(link.open(state_vector))
        except Exception as exc:
            writer.write(control.encode_message(control.error_answer(exc)))
            await writer.drain()
            return
        self._links.add(link)
        logger.info("a Jupyter room attached to %s (%s)", share.path, link.label)
        sender = asyncio.create_task(link.send_loop(), name=f"room link {link.label}")
        try:
            await link.receive_loop(self._broadcast, self._relay_awareness)
        except Exception as exc:  # a broken room must never hurt the daemon
            logger.warning("room link for %s ended: %s", share.path, exc)
        finally:
            self._links.discard(link)
            link.close()
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sender
            logger.info("a Jupyter room detached from %s (%s)", share.path, link.label)
