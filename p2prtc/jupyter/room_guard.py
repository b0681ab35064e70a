"""The room guard: while a room is attached, the daemon is its file's only writer.

A stock room (jupyter_server_ydoc's DocumentRoom) saves its doc to the file and reloads the
doc when the file changes on disk. Attached, both are switched off: a write of the daemon
would come back as an out-of-band change and the reload would wipe what is being typed.
The room's local path is kept on the Python object, out of the shared state (other
machines' JupyterLab would take it for a rename). Unguarding hands the room back as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any


class RoomGuard:
    """Switches one room's saves, reloads and shared path off (``guard``) and on again."""

    def __init__(self, room: Any, passes_reloads: Callable[[], bool]) -> None:
        """``passes_reloads``: whether an out-of-band change of the file may still reload
        the room while the guard is in place (the link is not attached)."""
        self._room = room
        self._passes_reloads = passes_reloads
        self._guarded = False
        self._saved_delay: float | None = None

    def guard(self) -> None:
        """The daemon writes the file from now on: no saves, no out-of-band reloads, and the
        local path stays out of the shared state."""
        if self._guarded:
            return
        self._guarded = True
        room = self._room
        self._saved_delay = room._save_delay
        room._save_delay = None
        if room._saving_document is not None:
            room._saving_document.cancel()  # a stock save still waiting for its delay
        room._save_to_disc = _no_save
        room._file.observe(room.room_id, self._on_outofband_change, room._on_filepath_change)
        document = room._document
        document.__class__ = _local_path_class(type(document))

    async def pass_initial_check(self) -> None:
        """Let the room's check "store and file agree" see the file it just read.

        The room compares its doc with the file as the contents manager reads it, which marks
        code cells ``trusted`` (and may lag the daemon's doc by a write): any difference makes
        it rewrite the doc from that file, and those rewrites would become shared edits (trust
        marks spread to every machine and written into the file). The daemon's doc is the
        truth here, so the one comparison made right after this load is given the file.
        """
        room = self._room
        model = await room._file.load_content(room.file_format, room.file_type)
        document = room._document

        async def file_content(*args: Any, **kwargs: Any) -> Any:
            del document.aget  # one comparison only: back to the document's own aget
            return model["content"]

        document.aget = file_content

    async def unguard(self) -> None:
        """Back to a stock room (the share was left): the file as the daemon last wrote it is
        the room's starting point, not an out-of-band change (that would reload the room from
        it and lose what is typed meanwhile)."""
        self._guarded = False
        room = self._room
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
        if self._passes_reloads():
            await self._room._on_outofband_change()


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
