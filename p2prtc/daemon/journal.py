"""What a shared file appends to its update log: each update with its change-log entries.

An update is in the store before it is sent anywhere. A peer's update the store refuses
(disk full) is already in the doc: it is kept here and persisted before anything else is.
"""

from __future__ import annotations

from pycrdt import merge_updates

from p2prtc.adapters.store import LogEntry, UpdateStore
from p2prtc.core.engine import NotebookEngine
from p2prtc.daemon import changelog


class Journal:
    """Appends ``engine``'s updates to ``store``, logged under ``member`` (this daemon's id:
    the author of its saves) or the peer they came from."""

    def __init__(self, store: UpdateStore, engine: NotebookEngine, member: str) -> None:
        self.store = store
        self.engine = engine
        self.member = member
        # Peers' updates the doc has but the store refused (disk full): persisted before
        # anything else is, and before the file shows them.
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

    def append_remote(self, update: bytes, sender: str | None) -> None:
        """Persist a peer's update (``sender``; None: a Jupyter room attached here). If the
        store refuses it, it raises, and the update is kept for the next append."""
        self._unsaved.append(update)
        if sender is None:
            self._unsaved_log += self._entries(changelog.JUPYTER)
        else:
            self._unsaved_log += self._entries(changelog.PEER, sender)
        self.save_unsaved()

    def save_unsaved(self) -> None:
        """Persist the peers' updates a store failure left in memory; raises while it fails."""
        if self._unsaved:
            # One update (a joiner's first state, say) is stored as is: merging it alone
            # would decode and encode it again (0.1 s for 50 MB).
            update = self._unsaved[0] if len(self._unsaved) == 1 else merge_updates(*self._unsaved)
            self.store.append(update, self._unsaved_log)
            self._unsaved.clear()
            self._unsaved_log.clear()

    def _entries(self, kind: str, sender: str | None = None) -> list[LogEntry]:
        """The log entries of the update being persisted: the cells stamped meanwhile."""
        stamps, concurrent = self.engine.edits.drain()
        latest = self.engine.versions.latest()
        if latest is None:  # a joiner's first state: the past, not news
            kind, stamps, concurrent = changelog.JOIN, [], []
        order = [cell["id"] for cell in latest.notebook["cells"]] if latest else []
        logged = changelog.entries(
            kind, sender or self.member, stamps, concurrent, self.engine.doc, order
        )
        return self._bursts.kept(logged)
