"""What a shared file appends to its update log: each update with its change-log entries.

An update made here is in the store before it is sent anywhere. A peer's update (already in
the doc) is held here until the write that shows it, and persisted in the transaction that
records that write (one commit instead of two on the path from a peer's keystroke to the
file), or by whatever persists first; the file never shows an update the store lacks. If the
store refuses it (disk full), it stays held and is persisted before anything else is.
"""

from __future__ import annotations

from collections.abc import Callable

from pycrdt import merge_updates

from p2prtc.adapters.store import LogEntry, UpdateStore
from p2prtc.core.engine import NotebookEngine
from p2prtc.daemon import changelog

# The metadata to store with the doc at a log position (a write's record: versions.py).
Records = Callable[[int], dict[str, bytes]]


class Journal:
    """Appends ``engine``'s updates to ``store``, logged under ``member`` (this daemon's id:
    the author of its saves) or the peer they came from."""

    def __init__(self, store: UpdateStore, engine: NotebookEngine, member: str) -> None:
        self.store = store
        self.engine = engine
        self.member = member
        # Updates the doc has and the store not yet (peers', a repair's, or refused by a full
        # disk): persisted before anything else is, and before the file shows them.
        self._unsaved: list[bytes] = []
        self._unsaved_log: list[LogEntry] = []
        self._bursts = changelog.Bursts()

    def append(self, update: bytes, kind: str, meta: dict[str, bytes] | None = None) -> int:
        """Persist an update made here (``kind``: changelog.SAVE, SHARE), with ``meta`` in
        the same transaction; its log position."""
        log = self._entries(kind)
        if meta is None:
            return self.store.append(update, log)
        return self.store.append_with_meta(update, meta, log)

    def hold_remote(self, update: bytes, sender: str | None) -> None:
        """Take a peer's update (``sender``; None: a Jupyter room attached here), to persist
        with the write that shows it (``save_unsaved``), its log entries made now."""
        self._unsaved.append(update)
        if sender is None:
            self._unsaved_log += self._entries(changelog.JUPYTER)
        else:
            self._unsaved_log += self._entries(changelog.PEER, sender)

    def hold(self, update: bytes) -> None:
        """Take an update made here without log entries (a repair), to persist with the
        write that shows it."""
        self._unsaved.append(update)

    def save_unsaved(self) -> None:
        """Persist the updates held, if any; raises while the store refuses them."""
        if self._unsaved:
            self._append_unsaved(lambda _: {})

    def save_with_records(self, records: Records) -> int:
        """Persist the updates held and ``records`` of the doc as it then is, in one
        transaction; the log position of that doc. Raises while the store refuses them."""
        if self._unsaved:
            return self._append_unsaved(records)
        seq = self.store.last_seq() or 0
        self.store.set_metas(records(seq))
        return seq

    def _append_unsaved(self, records: Records) -> int:
        # One update (a joiner's first state, say) is stored as is: merging it alone would
        # decode and encode it again (0.1 s for 50 MB).
        update = self._unsaved[0] if len(self._unsaved) == 1 else merge_updates(*self._unsaved)
        seq = (self.store.last_seq() or 0) + 1  # the one the append gets, in one transaction
        self.store.append_with_meta(update, records(seq), self._unsaved_log)
        self._unsaved.clear()
        self._unsaved_log.clear()
        return seq

    def _entries(self, kind: str, sender: str | None = None) -> list[LogEntry]:
        """The log entries of the update being persisted: the cells stamped meanwhile."""
        stamps, concurrent = self.engine.edits.drain()
        latest = self.engine.versions.latest()
        if latest is None:  # a joiner's first state: the past, not news
            kind, stamps, concurrent = changelog.JOIN, [], []
        cells = latest.notebook["cells"] if latest and (stamps or concurrent) else []
        order = [cell["id"] for cell in cells]  # where to look for them first
        logged = changelog.entries(
            kind, sender or self.member, stamps, concurrent, self.engine.doc, order
        )
        return self._bursts.kept(logged)
