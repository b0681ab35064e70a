"""Writing a shared file's doc over the file without losing a save.

A save on disk that was not ingested yet is merged first, never overwritten; the replace is
atomic and tried again while editors keep saving meanwhile; a save our rename displaced is
merged. Each step is recorded before it is taken (versions.py, crash_points.py), so a crash
at any point restarts consistent. `SharedFile` (document.py) writes through one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from p2prtc.adapters.files import (
    FileChangedMeanwhile,
    FileUnreadable,
    Signature,
    atomic_write,
    displaced_path,
    read_file,
    signature_of,
)
from p2prtc.core.engine import NotebookEngine, Repaired, text_digest
from p2prtc.core.notebook import MAX_NOTEBOOK_BYTES
from p2prtc.daemon.crash_points import crash_point
from p2prtc.daemon.journal import Journal
from p2prtc.daemon.versions import SavedVersions
from p2prtc.errors import P2PError

logger = logging.getLogger(__name__)

# Tries to replace the file when editors keep saving over it meanwhile.
_WRITE_ATTEMPTS = 5

# A save found on disk -> its update, already persisted (raises for a file that is not a
# notebook: nothing ingested).
Ingest = Callable[[bytes], bytes | None]


class FileWriter:
    """Writes the doc of ``engine`` to its file; ``ingest`` merges a save found there."""

    def __init__(
        self, engine: NotebookEngine, journal: Journal, versions: SavedVersions, ingest: Ingest
    ) -> None:
        self._engine = engine
        self._journal = journal
        self._versions = versions
        self._ingest = ingest

    def write(self, path: Path, replace_unknown: bool, repaired: Repaired) -> bytes | None:
        """Bring ``path`` up to date with the doc; returns the update of a save merged
        meanwhile, if any. ``repaired``: what the repair just before learnt of the doc."""
        for _ in range(_WRITE_ATTEMPTS):
            signature = signature_of(path)
            on_disk = read_if_present(path)
            if on_disk is not None and not replace_unknown and not self._engine.is_known(on_disk):
                # A save the watcher has not delivered yet: merge it (its ingest writes the
                # merged result if needed) rather than overwrite it.
                return self._ingest(on_disk)
            try:
                return self._replace(path, on_disk, signature, repaired)
            except FileChangedMeanwhile:
                crash_point("write-retry")
                replace_unknown = False  # whatever is there now is someone's save
        return None  # editors keep saving: the watcher delivers them, then we write again

    def merge_displaced(self, path: Path, displaced: bytes) -> bytes | None:
        """Merge a save a write displaced (kept on disk until then: see displaced_path)."""
        try:
            update = self._ingest(displaced)
        except P2PError:
            # Not a notebook: give the user's file back untouched, and report it.
            atomic_write(path, displaced, unless_changed_from=signature_of(path))
            raise
        finally:
            displaced_path(path).unlink(missing_ok=True)
        return update

    def _replace(
        self,
        path: Path,
        on_disk: bytes | None,
        signature: Signature | None,
        repaired: Repaired,
    ) -> bytes | None:
        """Write the doc over the file; the update of a save it displaced, if any."""
        engine = self._engine
        if on_disk is not None and engine.holds_doc(on_disk):
            return None  # nothing changed since it was written or read
        text, notebook = engine.rendered(repaired.notebook)  # one conversion of the doc for all
        if on_disk is not None and engine.shows_doc(on_disk, notebook):
            return None  # the same content (written in another form, say): left alone
        data = text.encode()
        if data == on_disk:
            if not engine.is_known(data):
                engine.remember_written(text, notebook, waiting=repaired.waiting)
            return None
        digest = text_digest(data)  # once: a 50 MB notebook takes 0.05 s to hash
        # The updates it shows and the record of the write, in one transaction.
        seq = self._journal.save_with_records(
            lambda at: self._versions.pending_meta(data, at, digest)
        )
        crash_point("write-pending")
        displaced = atomic_write(path, data, unless_changed_from=signature)
        crash_point("write-renamed")
        # Remembered once it is on disk, not before (a peer's edit waits for the rename):
        # the watcher, on this event loop, sees the new file only after this.
        engine.remember_written(text, notebook, digest, repaired.waiting)
        self._versions.record_base(data, seq, digest)
        self._versions.maybe_compact()
        if displaced is None:
            return None
        # An editor saved in the very instant of our rename: merge its save now (and write
        # the merged result), as if the watcher had brought it.
        logger.info("merging a save of %s that landed while writing it", path)
        crash_point("write-displaced")
        return self.merge_displaced(path, displaced)


def read_if_present(path: Path) -> bytes | None:
    """The file's bytes; None if it is not there (raises if it is there and unreadable)."""
    try:
        return read_file(path, MAX_NOTEBOOK_BYTES)
    except FileUnreadable:
        if path.exists():
            raise
        return None
