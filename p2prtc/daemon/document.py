"""One shared notebook on this machine: its file kept in step with the doc, merges of saves.

Rules from the design: an update is in the store before it is sent anywhere (journal.py);
the daemon's own writes are atomic and recognised when the watcher reports them; an invalid
file is reported and never ingested; edits made while the daemon was stopped are ingested at
start, three-way against the last version the daemon wrote or read (its record: versions.py).
Writing the doc over the file, saves found there merged first, is file_writer.py's.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pycrdt import Doc, merge_updates

from p2prtc.adapters.files import displaced_path, read_file
from p2prtc.adapters.store import UpdateStore
from p2prtc.core.edits import Author
from p2prtc.core.engine import NotebookEngine, Repaired, text_digest
from p2prtc.core.model import meta_of
from p2prtc.core.notebook import MAX_NOTEBOOK_BYTES
from p2prtc.daemon import changelog
from p2prtc.daemon.crash_points import crash_point
from p2prtc.daemon.file_writer import FileWriter, read_if_present
from p2prtc.daemon.journal import Journal
from p2prtc.daemon.versions import SavedVersions
from p2prtc.errors import P2PError

logger = logging.getLogger(__name__)

Clock = Callable[[], float]  # seconds since the epoch, as time.time


class SharedFile:
    """Keeps ``path`` and the shared doc in step. Not thread-safe: one event loop owns it."""

    def __init__(
        self,
        path: Path,
        engine: NotebookEngine,
        store: UpdateStore,
        member: str,
        *,
        clock: Clock = time.time,
    ) -> None:
        self.path = path
        self.clock = clock  # what stamps a save's edits (a seeded replay passes its own)
        self.engine = engine
        self.store = store
        self.member = member  # this daemon's id: the author of its saves
        self.journal = Journal(store, engine, member)
        self.versions = SavedVersions(path, engine, store)
        self._writer = FileWriter(engine, self.journal, self.versions, self.ingest)

    @property
    def doc(self) -> Doc[Any]:
        return self.engine.doc

    @property
    def has_notebook(self) -> bool:
        """False while a joiner's doc is still empty (no peer with content answered yet)."""
        return "nbformat" in meta_of(self.engine.doc)

    @classmethod
    def create(
        cls, path: Path, store: UpdateStore, member: str, *, clock: Clock = time.time
    ) -> SharedFile:
        """The sharer's one initial load of the file."""
        text = read_file(path, MAX_NOTEBOOK_BYTES)
        engine = NotebookEngine.load(text)
        shared = cls(path, engine, store, member, clock=clock)
        seq = shared.journal.append(engine.full_state(), changelog.SHARE)
        shared.versions.record_base(text, seq)
        return shared

    @classmethod
    def empty(
        cls, path: Path, store: UpdateStore, member: str, *, clock: Clock = time.time
    ) -> SharedFile:
        """A joiner's copy: it adopts the state peers send and never loads its own file."""
        return cls(path, NotebookEngine(Doc()), store, member, clock=clock)

    @classmethod
    def restore(
        cls, path: Path, store: UpdateStore, member: str, *, clock: Clock = time.time
    ) -> SharedFile:
        """Reopen after a restart: the doc from the log, the versions from its metadata."""
        engine = NotebookEngine.from_updates(store.updates())
        shared = cls(path, engine, store, member, clock=clock)
        shared.versions.restore()
        return shared

    def catch_up(self) -> bytes | None:
        """After a restart: ingest edits made while stopped, or rewrite a missing file.

        Returns the update to send (already persisted). Raises for an invalid file.
        """
        if self.engine.versions.latest() is None:
            return None  # a join that never completed: wait for peers
        kept = displaced_path(self.path)
        if kept.exists():  # the daemon died before merging a save its write displaced
            logger.warning("merging a save of %s displaced before a crash", self.path)
            update = self._writer.merge_displaced(self.path, read_file(kept, MAX_NOTEBOOK_BYTES))
            return merged(update, self.write())
        if not self.path.exists():
            logger.warning("%s is missing: writing the shared copy back", self.path)
        else:
            with contextlib.suppress(P2PError):  # an unreadable file is the write's to report
                self.engine.learn_form(read_file(self.path, MAX_NOTEBOOK_BYTES))
        return self.write()

    def ingest(self, text: bytes) -> bytes | None:
        """Merge a save of the file; returns the update to send, already persisted.

        Raises InvalidNotebook & co. (nothing ingested) for a file that is not a notebook.
        """
        self.journal.save_unsaved()
        author = Author(self.member, self.clock())
        result = self.engine.ingest(text, recall=self.versions.recall, author=author)
        if result.update is not None:
            # The seq this append gets is the next one: base and update land in one transaction.
            seq = (self.store.last_seq() or 0) + 1
            # A save merged with remote edits differs from the doc: keep its own text.
            meta = self.versions.base_meta(text, seq, keep_text=result.needs_write)
            self.versions.base_seq = self.journal.append(result.update, changelog.SAVE, meta)
            crash_point("ingest-persisted")
        if result.needs_write:
            self.write()
        return result.update

    def own_versions(self) -> frozenset[bytes]:
        """The digests (``text_digest``) of the notebook's texts as this daemon wrote or read
        them (the versions kept whole): a snapshot, for use off the event loop."""
        return self.engine.versions.known_digests()

    def read_and_ingest(self) -> bytes | None:
        """The watcher saw the file change: ingest it unless it is our own last write (an
        older version saved unchanged by a stale editor is written over with the doc)."""
        text = read_file(self.path, MAX_NOTEBOOK_BYTES)
        latest = self.engine.versions.latest()
        if latest is not None and latest.digest == text_digest(text):
            return None
        return self.ingest(text)

    def apply_remote(self, update: bytes, sender: str | None = None) -> None:
        """Take an update a peer sent (already applied to the doc by the sync session), to
        persist with the write that shows it (``write``), or with whatever persists first;
        ``sender``: that peer, None for a Jupyter room attached to this daemon."""
        self.journal.hold_remote(update, sender)

    def save_unsaved(self) -> None:
        """Persist the updates held for a write, when none is coming (raises while the store
        refuses them)."""
        self.journal.save_unsaved()

    def write(self, *, replace_unknown: bool = False) -> bytes | None:
        """Bring the file up to date with the doc.

        A save on disk that was not ingested yet is merged first, never overwritten (its
        update, to send to peers, is returned); an invalid file on disk raises and stays
        untouched until the user fixes it. ``replace_unknown`` is for a joiner's first write
        over a file the user agreed to replace.
        """
        repaired = self._repair()
        try:
            written = self._writer.write(self.path, replace_unknown, repaired)
        finally:
            self.journal.save_unsaved()  # the file was left as it was: held updates go in now
        return merged(repaired.update, written)

    def holds_another_notebook(self) -> bool:
        """Whether the file on disk is there and holds something else than the doc (a
        joiner's destination: the same notebook is adopted, another one is never replaced
        unless the user said so)."""
        on_disk = read_if_present(self.path)
        return on_disk is not None and not self.engine.holds(on_disk)

    def _repair(self) -> Repaired:
        """Repair cells moved concurrently (core.repair) before the file shows the doc:
        persisted with the write (or after it, if the file stays), then sent like any
        update."""
        repaired = self.engine.repair()
        if repaired.update is not None:
            self.journal.hold(repaired.update)
        return repaired


def merged(*updates: bytes | None) -> bytes | None:
    """One update for all of these (None: no change at all)."""
    present = [update for update in updates if update is not None]
    return merge_updates(*present) if len(present) > 1 else next(iter(present), None)
