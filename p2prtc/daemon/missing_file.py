"""A share's file that went, until what became of it is decided: the grace, then following
it to its new name (daemon/renames.py says which) or writing the shared copy back.

Never read as "delete everything". Until the decision, the share's writer leaves the missing
name alone, even for a peer's edit: writing it back would make a rename look undone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from p2prtc.daemon.document import SharedFile
from p2prtc.daemon.renames import Gone, new_name

logger = logging.getLogger(__name__)

# Grace before deciding what became of a file gone (renamed? deleted: write it back?):
# editors that save by delete + create, or rename away + write (vim), finish first.
DELETED_FILE_GRACE_S = 2.0


class MissingFile:
    """What became of one share's file when it went.

    ``is_active``: whether the share is active (a joining or closed one decides nothing);
    ``write``: schedules the share's write, which brings the file up to date once decided;
    ``on_renamed``: moves the share to the file's new name, False if it cannot be taken.
    """

    def __init__(
        self, file: SharedFile, *, is_active: Callable[[], bool], write: Callable[[], None]
    ) -> None:
        self._file = file
        self._is_active = is_active
        self._write = write
        self.on_renamed: Callable[[Path], Awaitable[bool]] | None = None
        self._gone: Gone | None = None  # pending
        self._gone_check: asyncio.Task[None] | None = None
        self._write_back = False  # decided: deleted, to be written back

    def noticed(self, moved_to: Path | None = None) -> None:
        """The file went (``moved_to``: the watcher saw it renamed to that name): decide
        what became of it after a grace."""
        if self._gone is not None:  # already pending: its decision uses the newest hint
            self._gone.moved_to = moved_to or self._gone.moved_to
            return
        self._gone = Gone(time.time(), moved_to)
        self._write_back = False
        self._gone_check = asyncio.create_task(
            self._settle(self._gone), name=f"gone {self._file.path}"
        )

    def holds_writes(self) -> bool:
        """Is the file missing, renamed or deleted we cannot tell yet? Writing it back now
        would bring the old name back. The writer may notice before the watcher (a peer's
        edit in the instant of a rename): the grace then starts here."""
        if not self._is_active() or self._write_back or self._file.path.exists():
            return False
        self.noticed()
        return True

    def written(self) -> None:
        """The file was written: a decision to write it back is carried out."""
        self._write_back = False

    async def follow_if_renamed(self, gone: Gone) -> bool:
        """Follow the missing file to its new name in its folder, if it has one."""
        # A folder of thousands of files just made takes a second to read: not on the loop.
        # (Copies: the watcher may update the hint meanwhile, peers the doc.)
        snapshot = Gone(gone.at, gone.moved_to)
        versions = self._file.own_versions()
        new_path = await asyncio.to_thread(new_name, self._file.path, snapshot, versions)
        if new_path is None or self.on_renamed is None or self._file.path.exists():  # (undone)
            return False
        return await self.on_renamed(new_path)

    async def _settle(self, gone: Gone) -> None:
        try:
            await asyncio.sleep(DELETED_FILE_GRACE_S)
            if self._is_active() and not self._file.path.exists():
                await self._follow_or_write_back(gone)
        finally:
            self._gone = None
        # Whatever became of it, the file is brought up to date: peers' edits held meanwhile
        # (also when the file came back, as after vim's save), and a save made under a new
        # name (merged, not overwritten).
        self._write()

    async def _follow_or_write_back(self, gone: Gone) -> None:
        try:
            followed = await self.follow_if_renamed(gone)
        except Exception:  # the file must never stay missing for good
            logger.exception("following %s to its new name failed", self._file.path)
            followed = False
        if not followed:
            logger.warning("%s was deleted: writing the shared copy back", self._file.path)
            self._write_back = True

    async def close(self) -> None:
        if self._gone_check is not None:
            self._gone_check.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gone_check
