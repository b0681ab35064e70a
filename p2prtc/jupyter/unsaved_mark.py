"""The tabs' "unsaved changes" mark of an attached room, cleared as a save would clear it.

An attached room never saves (the daemon writes the file), so nothing clears the shared
``dirty`` flag that drives JupyterLab's mark. It is cleared MARK_CLEAN_AFTER_S after the
last change made here: by then the daemon has written the file (within milliseconds).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

MARK_CLEAN_AFTER_S = 0.5


class UnsavedMark:
    """Clears one room's ``dirty`` flag a while after its last own change, while attached."""

    def __init__(self, room: Any, attached: Callable[[], bool]) -> None:
        self._room = room
        self._attached = attached
        self._timer: asyncio.TimerHandle | None = None
        self._clearing = False  # our own change of the flag: not a change to clear again

    def changed_here(self) -> None:
        """The room's doc changed here (not by the daemon): clear the mark after a while."""
        if self._clearing:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(MARK_CLEAN_AFTER_S, self._clear)

    def _clear(self) -> None:
        """What the room does after saving, done once the daemon wrote the tabs' changes.
        Only after changes made here (the writer of a change clears it), so that rooms never
        answer each other."""
        document = self._room._document
        if not self._attached() or not document.dirty:
            return
        self._clearing = True
        try:
            document.dirty = False
        finally:
            self._clearing = False
