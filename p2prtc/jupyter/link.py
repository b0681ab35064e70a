"""The Jupyter side of the room link: one collaboration room kept attached to the daemon.

A room whose file is a p2prtc share takes its doc from the daemon (its history *is* the
share's history) and then streams updates both ways over the control socket (see
`p2prtc/core/roomlink.py`). While attached, the daemon is the file's only writer: the room's
own saves and its out-of-band reloads are switched off, so a write of the daemon never
rewrites the room (that reload would wipe what is being typed). Its local file path stays out
of the shared state (other machines' JupyterLab would take it for a rename).

A room whose daemon goes away keeps working (typing, local collaborators) and re-attaches
when the daemon answers again: the state vectors exchanged then carry what each side missed.
A room of an unshared file stays a stock room; it is attached when its file gets shared.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
from pathlib import Path
from typing import Any

from pycrdt import Doc

from p2prtc import control, paths
from p2prtc.core import roomlink
from p2prtc.errors import P2PError
from p2prtc.jupyter.awareness_relay import AwarenessRelay
from p2prtc.jupyter.room_guard import RoomGuard
from p2prtc.jupyter.room_stream import RoomStream
from p2prtc.jupyter.shared_doc import merge_daemon_part
from p2prtc.jupyter.unsaved_mark import UnsavedMark

logger = logging.getLogger(__name__)

# How soon a detached room tries again: an attached room whose daemon went away comes back
# quickly; a room of a file that may get shared some day only looks now and then.
REATTACH_S = 0.5
LOOK_FOR_SHARE_S = 2.0


class LinkState(enum.Enum):
    STOCK = "stock"  # a plain Jupyter room: it loads and saves the file itself
    ATTACHED = "attached"  # one history with the daemon's doc; the daemon writes the file
    WAITING = "waiting"  # was attached, the daemon went away: edits wait in the room's doc
    CLOSED = "closed"


class NotAttached(Exception):
    """The daemon refused the room or is not there."""


class RoomLinkClient:
    """Keeps one DocumentRoom (jupyter_server_ydoc) attached to the daemon of ``home``.

    Its parts: the guard (room_guard.py), the first merge (shared_doc.py), one stream per
    attachment (room_stream.py), the awareness relay and the tabs' unsaved mark."""

    def __init__(self, room: Any, path: Path, home: Path) -> None:
        self.room = room
        self.path = path
        self.home = home
        self.state = LinkState.STOCK
        self.label = f"jupyter {os.getpid()}: {room.room_id}"
        self._task: asyncio.Task[None] | None = None
        self._stream: RoomStream | None = None
        self._guard = RoomGuard(room, passes_reloads=lambda: self.state is LinkState.STOCK)
        self._awareness = AwarenessRelay(room)
        self._unsaved = UnsavedMark(room, attached=lambda: self.state is LinkState.ATTACHED)

    @property
    def doc(self) -> Doc[Any]:
        doc: Doc[Any] = self.room.ydoc
        return doc

    def _set_state(self, new: LinkState) -> None:
        if new is not self.state:
            logger.info("room %s: %s -> %s", self.room.room_id, self.state.value, new.value)
            self.state = new

    async def adopt(self) -> bool:
        """At the room's initialization: take the daemon's doc if the file is shared."""
        try:
            reader, writer = await self._attach()
        except NotAttached:
            return False
        self._start(reader, writer)
        await self._guard.pass_initial_check()
        return True

    def watch(self) -> None:
        """Keep the link up (or look for a share) in the background until the room stops."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"p2prtc {self.label}")

    # --- attaching ---------------------------------------------------------------------

    async def _attach(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open the link and merge both sides' missing parts; raises NotAttached.

        What the room sends next must be followed from the moment its missing part was
        taken: the caller starts following before it awaits anything."""
        try:
            reader, writer = await asyncio.open_unix_connection(
                paths.control_socket(self.home), limit=control.MAX_LINE
            )
        except OSError as exc:
            raise NotAttached(f"daemon not reachable: {exc}") from exc
        try:
            request = roomlink.attach_request(str(self.path), self.doc.get_state(), self.label)
            writer.write(control.encode_message(request))
            answer = control.decode_message(await reader.readline())
            if answer.get("ok") is not True:
                raise NotAttached(str(answer.get("error", "closed")))
            update = roomlink.unb64(answer, "update")
            daemon_state = roomlink.unb64(answer, "state_vector")
            Doc().apply_update(update)  # both decode (or raise) before the room is touched
            Doc().get_update(daemon_state)
        except (OSError, P2PError, ValueError) as exc:  # ValueError: a line over MAX_LINE
            writer.close()
            raise NotAttached(str(exc)) from exc
        except BaseException:
            writer.close()
            raise
        self._merge(update)
        missing = self.doc.get_update(daemon_state)
        writer.write(control.encode_message(roomlink.update_message(missing)))
        return reader, writer

    def _merge(self, update: bytes) -> None:
        """Apply the daemon's part; a room with a history of its own is replaced first."""
        was_stock = self.state is LinkState.STOCK
        with self.doc.transaction():
            if was_stock:
                self._guard.guard()
            merge_daemon_part(self.room, update, self.path, replaces_own=was_stock)

    # --- streaming ----------------------------------------------------------------------

    def _start(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._set_state(LinkState.ATTACHED)
        self._stream = RoomStream(
            self.room,
            reader,
            writer,
            on_awareness=self._awareness.apply,
            on_change_here=self._unsaved.changed_here,
        )
        self._awareness.start(self._stream.send)

    async def _run(self) -> None:
        """Until the room stops (its last tab closed a while ago): stream, or try again."""
        while not self._room_stopped():
            if self.state is LinkState.ATTACHED:
                await self._stream_until_detached()
                continue
            delay = LOOK_FOR_SHARE_S if self.state is LinkState.STOCK else REATTACH_S
            await asyncio.sleep(delay)
            try:
                self._start(*await self._attach())
            except NotAttached:
                pass  # not shared, or no daemon: look again later
            except Exception:  # the room must keep working whatever happens here
                logger.exception("room %s: attaching failed", self.room.room_id)
        self._set_state(LinkState.CLOSED)

    def _room_stopped(self) -> bool:
        return bool(self.room._stopped.is_set())

    async def _stream_until_detached(self) -> None:
        """Stream until the link or the room ends, then wait for the daemon or go stock."""
        assert self._stream is not None  # ATTACHED: _start made it
        try:
            detached = await self._stream.run()
        finally:
            self._awareness.stop()
        if detached:
            await self._guard.unguard()
            self._set_state(LinkState.STOCK)
        else:
            self._set_state(LinkState.WAITING)
