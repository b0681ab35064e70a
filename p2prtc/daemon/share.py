"""A share at run time: its record, its file, its state, and the writer that renders it.

What became of its file when it went is decided by its ``missing`` (daemon/missing_file.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from p2prtc.core.keys import share_tag
from p2prtc.daemon.document import SharedFile
from p2prtc.daemon.missing_file import MissingFile
from p2prtc.daemon.state import ShareRecord
from p2prtc.errors import ExitCode, P2PError

logger = logging.getLogger(__name__)

# (share, update) -> None: send an update made here to every peer of the share.
Broadcast = Callable[["Share", bytes], Awaitable[None]]
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
        # The file went: what became of it is decided after a grace.
        self.missing = MissingFile(
            file, is_active=lambda: self.state is ShareState.ACTIVE, write=self.schedule_write
        )

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
        if self.missing.holds_writes():
            return self._save_held()  # the decision schedules the write
        joining = self.state is ShareState.JOINING
        if joining and not self.file.has_notebook:
            return self._save_held()  # synced with a peer that has nothing yet: wait
        if joining and self.keep_other_file and self.file.holds_another_notebook():
            self.refused = DestinationExists(str(self.path))
            self._report(self.refused)  # status tells a join that finishes in the background
            self.ready.set()
            return self._save_held()
        try:
            update = self.file.write(replace_unknown=joining)
        except P2PError as exc:
            self._report(exc)
            return False
        self._report(None)
        self.missing.written()
        if update is not None:
            await self._broadcast(self, update)
        if joining:
            await self._become_active()
        return True

    def _save_held(self) -> bool:
        """No write now: persist the peers' updates held for one (false while the store
        refuses them: tried again)."""
        try:
            self.file.save_unsaved()
        except P2PError as exc:
            self._report(exc)
            return False
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

    def rename(self, new_path: Path) -> None:
        """Follow the file to ``new_path``: a local name (peers keep theirs); invitations made
        here from now on offer it."""
        logger.info("%s was renamed to %s: the share follows it", self.path, new_path.name)
        self.record.path = self.file.path = new_path
        self.record.name = new_path.name

    def remote_update(self, update: bytes, sender: str | None = None) -> None:
        """A peer's update reached the doc: the writer persists it with the write that shows
        it (one commit), and retries until the store takes it (disk full), so the file
        catches up once it does. ``sender``: that peer's id; None for a Jupyter room
        attached to this daemon."""
        self.file.apply_remote(update, sender)
        self.schedule_write()

    async def close(self) -> None:
        self._set_state(ShareState.CLOSED)
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
        await self.missing.close()
        with contextlib.suppress(P2PError):  # a full disk: the peers still have them
            self.file.save_unsaved()
        self.file.store.close()
