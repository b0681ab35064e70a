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
import contextlib
import enum
import logging
import os
from pathlib import Path
from typing import Any

from pycrdt import Array, Doc, Map, Subscription, TransactionEvent

from p2prtc import control, paths
from p2prtc.core import roomlink
from p2prtc.errors import P2PError

logger = logging.getLogger(__name__)

# How soon a detached room tries again: an attached room whose daemon went away comes back
# quickly; a room of a file that may get shared some day only looks now and then.
REATTACH_S = 0.5
LOOK_FOR_SHARE_S = 2.0
# Awareness (who is there, their cursors) leaves at most this often, changes coalesced.
AWARENESS_INTERVAL_S = 0.05
# The tabs' "unsaved changes" mark is cleared this long after their last change: by then
# the daemon has written the file (within milliseconds).
MARK_CLEAN_AFTER_S = 0.5
_META_KEYS = ("nbformat", "nbformat_minor", "metadata")


class LinkState(enum.Enum):
    STOCK = "stock"  # a plain Jupyter room: it loads and saves the file itself
    ATTACHED = "attached"  # one history with the daemon's doc; the daemon writes the file
    WAITING = "waiting"  # was attached, the daemon went away: edits wait in the room's doc
    CLOSED = "closed"


class NotAttached(Exception):
    """The daemon refused the room or is not there."""


class RoomLinkClient:
    """Keeps one DocumentRoom (jupyter_server_ydoc) attached to the daemon of ``home``."""

    def __init__(self, room: Any, path: Path, home: Path) -> None:
        self.room = room
        self.path = path
        self.home = home
        self.state = LinkState.STOCK
        self.label = f"jupyter {os.getpid()}: {room.room_id}"
        self._task: asyncio.Task[None] | None = None
        self._subscription: Subscription | None = None
        self._outgoing: asyncio.Queue[bytes] = asyncio.Queue()
        self._applying = False  # the daemon's update is being applied: do not send it back
        self._awareness_subscription: str | None = None
        self._mark_clean: asyncio.TimerHandle | None = None
        self._marking_clean = False
        self._awareness_changed: set[int] = set()  # tab clients whose state is not sent yet
        self._saved_delay: float | None = None
        self._guarded = False  # the room's saves and reloads are switched off

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
        await self._pass_initial_check()
        return True

    async def _pass_initial_check(self) -> None:
        """Let the room's check "store and file agree" see the file it just read.

        The room compares its doc with the file as the contents manager reads it, which marks
        code cells ``trusted`` (and may lag the daemon's doc by a write): any difference makes
        it rewrite the doc from that file, and those rewrites would become shared edits (trust
        marks spread to every machine and written into the file). The daemon's doc is the
        truth here, so the one comparison made right after this load is given the file.
        """
        room = self.room
        model = await room._file.load_content(room.file_format, room.file_type)
        document = room._document

        async def file_content(*args: Any, **kwargs: Any) -> Any:
            del document.aget  # one comparison only: back to the document's own aget
            return model["content"]

        document.aget = file_content

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
        with self.doc.transaction():
            if self.state is LinkState.STOCK:
                self._guard_room()
                if _has_content(self.doc):
                    self._clear_own_content()
            self._apply(update)
            if self.state is LinkState.STOCK:
                self._restate_meta()
            state = self.room._document._ystate
            if "path" in state:
                del state["path"]

    def _clear_own_content(self) -> None:
        """The room was loaded from the file by Jupyter (its own history): it gives way to the
        daemon's doc, which holds the same file and whatever was saved since."""
        logger.info("room %s takes the shared doc of %s", self.room.room_id, self.path)
        del self.room._document._ycells[:]
        meta = self.room._document._ymeta
        for key in list(meta.keys()):
            del meta[key]

    def _restate_meta(self) -> None:
        """Set the notebook's top-level values again, after both sides' entries: a map key set
        concurrently by the room and the daemon must not end up held by the deleted one."""
        meta = self.room._document._ymeta
        for key in _META_KEYS:
            if key in meta:
                value = meta[key]
                meta[key] = Map(value.to_py()) if isinstance(value, Map) else value

    def _guard_room(self) -> None:
        """The daemon writes the file from now on: no saves, no out-of-band reloads, and the
        local path stays out of the shared state."""
        if self._guarded:
            return
        self._guarded = True
        room = self.room
        self._saved_delay = room._save_delay
        room._save_delay = None
        if room._saving_document is not None:
            room._saving_document.cancel()  # a stock save still waiting for its delay
        room._save_to_disc = _no_save
        room._file.observe(room.room_id, self._on_outofband_change, room._on_filepath_change)
        document = room._document
        document.__class__ = _local_path_class(type(document))

    async def _unguard_room(self) -> None:
        """Back to a stock room (the share was left): the file as the daemon last wrote it is
        the room's starting point, not an out-of-band change (that would reload the room from
        it and lose what is typed meanwhile)."""
        self._guarded = False
        room = self.room
        with contextlib.suppress(Exception):  # a file that is gone: the room reports it later
            await room._file.load_content(room.file_format, room.file_type)
        room._save_delay = self._saved_delay
        del room._save_to_disc
        room._file.observe(room.room_id, room._on_outofband_change, room._on_filepath_change)
        room._document.__class__ = type(room._document).__mro__[1]
        with contextlib.suppress(AttributeError):
            del room._document.aget  # a check that never came
        room._save_to_disc()  # what was typed since the daemon's last write

    async def _on_outofband_change(self) -> None:
        if self.state is LinkState.STOCK:
            await self.room._on_outofband_change()

    # --- streaming ----------------------------------------------------------------------

    def _start(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._set_state(LinkState.ATTACHED)
        self._reader, self._writer = reader, writer
        self._outgoing = asyncio.Queue()
        self._subscription = self.doc.observe(self._on_room_change)
        self._awareness_subscription = self.room.awareness.observe(self._on_awareness)
        # Who is here already (the room's own, empty state is no collaborator).
        self._send_awareness([c for c, state in self.room.awareness.states.items() if state])

    def _stop_following(self) -> None:
        if self._subscription is not None:
            self.doc.unobserve(self._subscription)
            self._subscription = None
        if self._awareness_subscription is not None:
            self.room.awareness.unobserve(self._awareness_subscription)
            self._awareness_subscription = None

    def _on_awareness(self, topic: str, changes: tuple[dict[str, list[int]], Any]) -> None:
        """The tabs' awareness (applied by the room with itself as origin) leaves coalesced;
        what came from other machines (origin "local", see _receive_loop) does not."""
        what, origin = changes
        if topic != "update" or origin is not self.room:
            return
        if not self._awareness_changed:
            asyncio.get_running_loop().call_later(AWARENESS_INTERVAL_S, self._flush_awareness)
        self._awareness_changed.update(client for ids in what.values() for client in ids)

    def _flush_awareness(self) -> None:
        clients, self._awareness_changed = list(self._awareness_changed), set()
        if self.state is LinkState.ATTACHED:
            self._send_awareness(clients)

    def _send_awareness(self, clients: list[int]) -> None:
        if clients:
            update = self.room.awareness.encode_awareness_update(clients)
            self._outgoing.put_nowait(control.encode_message(roomlink.awareness_message(update)))

    def _apply_awareness(self, update: bytes) -> None:
        """Other machines' tabs, shown to ours: "local" makes the room broadcast them."""
        try:
            self.room.awareness.apply_awareness_update(update, "local")
        except Exception as exc:  # awareness is advisory: a bad one is dropped
            logger.info("room %s: dropped an awareness update: %s", self.room.room_id, exc)

    def _on_room_change(self, event: TransactionEvent) -> None:
        if self._applying:
            return
        self._outgoing.put_nowait(control.encode_message(roomlink.update_message(event.update)))
        if not self._marking_clean:
            if self._mark_clean is not None:
                self._mark_clean.cancel()
            loop = asyncio.get_running_loop()
            self._mark_clean = loop.call_later(MARK_CLEAN_AFTER_S, self._clear_dirty)

    def _clear_dirty(self) -> None:
        """What the room does after saving, done once the daemon wrote the tabs' changes: the
        shared ``dirty`` flag drives JupyterLab's "unsaved changes" mark. Only after changes
        made here (the writer of a change clears it), so that rooms never answer each other."""
        document = self.room._document
        if self.state is not LinkState.ATTACHED or not document.dirty:
            return
        self._marking_clean = True
        try:
            document.dirty = False
        finally:
            self._marking_clean = False

    def _apply(self, update: bytes) -> None:
        self._applying = True
        try:
            self.doc.apply_update(update)
        finally:
            self._applying = False

    async def _run(self) -> None:
        """Until the room stops (its last tab closed a while ago): stream, or try again."""
        while not self._room_stopped():
            if self.state is LinkState.ATTACHED:
                await self._stream()
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

    async def _stream(self) -> None:
        """Pump updates both ways until the link or the room ends."""
        sender = asyncio.create_task(self._send_loop())
        receiver = asyncio.create_task(self._receive_loop())
        room_stopped = asyncio.create_task(self.room._stopped.wait())
        detached = False
        try:
            await asyncio.wait({receiver, room_stopped}, return_when=asyncio.FIRST_COMPLETED)
            if receiver.done():
                detached = receiver.result()
        except Exception as exc:  # a broken link: try again, the room keeps working
            logger.info("room %s lost the daemon: %s", self.room.room_id, exc)
        finally:
            for task in (sender, receiver, room_stopped):
                task.cancel()
            await asyncio.gather(sender, receiver, room_stopped, return_exceptions=True)
            self._writer.close()
            self._stop_following()
        if detached:
            await self._unguard_room()
            self._set_state(LinkState.STOCK)
        else:
            self._set_state(LinkState.WAITING)

    async def _send_loop(self) -> None:
        while True:
            self._writer.write(await self._outgoing.get())
            await self._writer.drain()

    async def _receive_loop(self) -> bool:
        """True when the daemon detached us (share left), False when it went away."""
        while line := await self._reader.readline():
            message = roomlink.parse_message(control.decode_message(line))
            if isinstance(message, roomlink.Detached):
                logger.info("room %s detached: %s", self.room.room_id, message.reason)
                return True
            if isinstance(message, roomlink.Awareness):
                self._apply_awareness(message.update)
            else:
                self._apply(message.update)
        return False


def _no_save() -> None:
    """A room attached to the daemon never saves (a save request is answered "skipped"): the
    daemon writes the file."""
    return None


def _local_path_class(cls: type[Any]) -> type[Any]:
    """``cls`` with a path that is kept on the object, not in the shared state."""

    def get_path(self: Any) -> str | None:
        return getattr(self, "_p2prtc_path", None)

    def set_path(self: Any, value: str) -> None:
        self._p2prtc_path = value

    return type(f"Local{cls.__name__}", (cls,), {"path": property(get_path, set_path)})


def _has_content(doc: Doc[Any]) -> bool:
    return len(doc.get("cells", type=Array)) > 0 or len(doc.get("meta", type=Map)) > 0
