"""A share at run time: its record, its file, its state, and the writer that renders it."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from p2prtc.core.keys import share_tag
from p2prtc.daemon.document import SharedFile
from p2prtc.daemon.renames import Gone, new_name
from p2prtc.daemon.state import ShareRecord
from p2prtc.errors import ExitCode, P2PError

logger = logging.getLogger(__name__)

# (share, update) -> None: send an update made here to every peer of the share.
Broadcast = Callable[["Share", bytes], Awaitable[None]]
# Grace before deciding what became of a file gone (renamed? deleted: write it back?):
# editors that save by delete + create, or rename away + write (vim), finish first.
DELETED_FILE_GRACE_S = 2.0
WRITE_RETRY_S = 1.0


class DestinationExists(P2PError):
    """The destination file exists and differs; pass --force to replace it."""

    exit_code = ExitCode.DESTINATION_EXISTS


class ShareState(enum.Enum):
    JOINING = "joining"  # waiting for a peer's state: nothing written yet
    ACTIVE = "active"
    CLOSED = "closed"


class Share:
    """One shared notebook on this machine, owned by the daemon's event loop."""

    def __init__(
        self, record: ShareRecord, file: SharedFile, broadcast: Broadcast, state: ShareState
    ) -> None:
        self.record = record
        self.file = file
        self.state = state
        self.last_error: str | None = None
        # Set once the file is on disk, or once the join was refused (``refused`` says why):
        # joiners wait on it.
        self.ready = asyncio.Event()
        if state is ShareState.ACTIVE:
            self.ready.set()
        # A joiner's first write keeps a different file found at the path (no --force).
        self.keep_other_file = False
        self.refused: P2PError | None = None
        # The member whose state came over a rendezvous pipe, as a join reports it (id,
        # address): the file may be written before any link to it is up.
        self.state_from: dict[str, str] | None = None
        self._broadcast = broadcast
        self._dirty = asyncio.Event()
        self._writer = asyncio.create_task(self._write_loop(), name=f"writer {self.path}")
        self.on_active: Callable[[Share], Awaitable[None]] | None = None
        # Moves the share to the file's new name; False if that name cannot be taken.
        self.on_renamed: Callable[[Share, Path], Awaitable[bool]] | None = None
        # The file went: what became of it is decided after a grace (see file_deleted).
        self._gone: Gone | None = None  # pending
        self._gone_check: asyncio.Task[None] | None = None
        self._write_back = False  # decided: deleted, to be written back

    @property
    def share_id(self) -> bytes:
        return self.record.share_id

    @property
    def path(self) -> Path:
        return self.record.path

    def tag(self, epoch: int) -> str:
        return share_tag(self.record.secret, epoch)

    def retired_tags(self, epoch: int) -> list[str]:
        """Tags of the secrets rotated away: who still holds one finds us, to be told."""
        return [share_tag(secret, epoch) for _, secret in self.record.retired]

    def _set_state(self, new: ShareState) -> None:
        logger.info("share %s: %s -> %s", self.path, self.state.value, new.value)
        self.state = new

    def _report(self, error: P2PError | None) -> None:
        message = error.message if error else None
        if message != self.last_error:
            if message:
                logger.warning("%s: %s", self.path, message)
            self.last_error = message

    def schedule_write(self) -> None:
        """Render the doc to the file soon; bursts of remote updates coalesce into one write."""
        self._dirty.set()

    async def _write_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                written = await self._write_once()
            except Exception as exc:  # the writer must outlive any one failure
                logger.exception("writing %s failed", self.path)
                self.last_error = f"internal error while writing the file: {exc}"
                written = False
            if not written:
                await asyncio.sleep(WRITE_RETRY_S)
                self._dirty.set()

    async def _write_once(self) -> bool:
        if self._missing_undecided():
            return True  # the decision schedules the write
        joining = self.state is ShareState.JOINING
        if joining and not self.file.has_notebook:
            return True  # synced with a peer that has nothing yet: wait for real state
        if joining and self.keep_other_file and self.file.holds_another_notebook():
            self.refused = DestinationExists(str(self.path))
            self._report(self.refused)  # status tells a join that finishes in the background
            self.ready.set()
            return True
        try:
            update = self.file.write(replace_unknown=joining)
        except P2PError as exc:
            self._report(exc)
            return False
        self._report(None)
        self._write_back = False
        if update is not None:
            await self._broadcast(self, update)
        if joining:
            await self._become_active()
        return True

    def _missing_undecided(self) -> bool:
        """Is the file missing, renamed or deleted we cannot tell yet? Writing it back now
        would bring the old name back. The writer may notice before the watcher (a peer's
        edit in the instant of a rename): the grace then starts here."""
        if self.state is not ShareState.ACTIVE or self._write_back or self.path.exists():
            return False
        self.file_deleted()
        return True

    async def _become_active(self) -> None:
        self.record.joined = True
        self._set_state(ShareState.ACTIVE)
        self.ready.set()
        if self.on_active is not None:
            await self.on_active(self)

    async def file_changed(self) -> None:
        """The watcher saw a save: ingest it (invalid files are reported, never ingested)."""
        if self.state is not ShareState.ACTIVE:
            return
        try:
            update = self.file.read_and_ingest()
        except P2PError as exc:
            self._report(exc)
            return
        self._report(None)
        if update is not None:
            await self._broadcast(self, update)

    def file_deleted(self, moved_to: Path | None = None) -> None:
        """The file went (``moved_to``: the watcher saw it renamed to that name).

        Never read as "delete everything": after a grace, the share follows the file renamed
        within its folder (daemon/renames.py), or else writes the shared copy back. Until
        then the writer leaves the missing file alone, even for a peer's edit.
        """
        if self._gone is not None:  # already pending: its decision uses the newest hint
            self._gone.moved_to = moved_to or self._gone.moved_to
            return
        self._gone = Gone(time.time(), moved_to)
        self._write_back = False
        self._gone_check = asyncio.create_task(self._settle(self._gone), name=f"gone {self.path}")

    async def _settle(self, gone: Gone) -> None:
        try:
            await asyncio.sleep(DELETED_FILE_GRACE_S)
            if self.state is ShareState.ACTIVE and not self.path.exists():
                await self._follow_or_write_back(gone)
        finally:
            self._gone = None
        # Whatever became of it, the file is brought up to date: peers' edits held meanwhile
        # (also when the file came back, as after vim's save), and a save made under a new
        # name (merged, not overwritten).
        self.schedule_write()

    async def _follow_or_write_back(self, gone: Gone) -> None:
        try:
            followed = await self.follow_if_renamed(gone)
        except Exception:  # the file must never stay missing for good
            logger.exception("following %s to its new name failed", self.path)
            followed = False
        if not followed:
            logger.warning("%s was deleted: writing the shared copy back", self.path)
            self._write_back = True

    async def follow_if_renamed(self, gone: Gone) -> bool:
        """Follow the missing file to its new name in its folder, if it has one."""
        # A folder of thousands of files just made takes a second to read: not on the loop.
        # (Copies: the watcher may update the hint meanwhile, peers the doc.)
        snapshot = Gone(gone.at, gone.moved_to)
        new_path = await asyncio.to_thread(new_name, self.path, snapshot, self.file.own_versions())
        if new_path is None or self.on_renamed is None or self.path.exists():  # (undone since)
            return False
        return await self.on_renamed(self, new_path)

    def rename(self, new_path: Path) -> None:
        """Follow the file to ``new_path``: a local name (peers keep theirs); invitations made
        here from now on offer it."""
        logger.info("%s was renamed to %s: the share follows it", self.path, new_path.name)
        self.record.path = self.file.path = new_path
        self.record.name = new_path.name

    def remote_update(self, update: bytes, sender: str | None = None) -> None:
        """A peer's update reached the doc: persist it, then render it to the file.
        ``sender``: that peer's id; None for a Jupyter room attached to this daemon.

        The write is scheduled even when persisting fails (disk full): the writer persists
        first, and retries until the store takes it, so the file catches up once it does.
        """
        self.schedule_write()
        self.file.apply_remote(update, sender)

    async def close(self) -> None:
        self._set_state(ShareState.CLOSED)
        for task in (self._writer, self._gone_check):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.file.store.close()
