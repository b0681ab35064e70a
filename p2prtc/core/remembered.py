"""The versions of one file a save may start from: the recent ones whole, older ones as facts.

Each text the engine read or wrote is a ``Version`` (core.snapshot). The newest few are kept
whole (notebook and doc state), within a count and a byte budget; the ones they push out go
to a ``VersionHistory`` (core.history) as facts, rebuilt from the caller's update log only if
a stale save needs them. Sans-IO: versions in, versions out.
"""

from __future__ import annotations

from collections import deque

from p2prtc.core.history import Fact, VersionHistory, cell_facts
from p2prtc.core.model import keeps_cell_ids
from p2prtc.core.notebook import Notebook
from p2prtc.core.snapshot import Version, cell_keys, share_unchanged_parts

# Versions kept whole (notebook and doc state); older ones are remembered as facts only.
MAX_VERSIONS = 8
# ... and at most this many bytes of doc states besides the newest version's: each whole
# version holds a full state (1.75 MB for the 1.7 MB sample, 50 MB for a notebook with 50 MB
# of images). Beyond it, older versions go to the facts too, rebuilt from the caller's log
# only if a stale save needs them.
MAX_OLDER_STATE_BYTES = 8 * 2**20


class RememberedVersions:
    """The engine's memory of its file's versions, oldest first."""

    def __init__(self) -> None:
        # At most MAX_VERSIONS and MAX_OLDER_STATE_BYTES, oldest first.
        self._versions: deque[Version] = deque()
        self.history = VersionHistory()  # the versions before those
        # The oldest this many versions were written before the last save was made from an
        # older one: that editor never held them, only a second editor may.
        self.predating_last_save = 0
        self._latest_complete: Version | None = None  # see latest_complete

    @property
    def whole(self) -> list[Version]:
        """The versions kept whole, oldest first."""
        return list(self._versions)

    def latest(self) -> Version | None:
        return self._versions[-1] if self._versions else None

    def latest_complete(self) -> Version | None:
        """The newest version the doc held whole when it was read or written (kept even if
        pushed out of the versions): what a repair of moved cells compares the doc with.
        A text written while an update waited for an earlier one lacks the lines typed into
        a cell a peer moved; compared with it once the update came, they went for good."""
        return self._latest_complete

    def version_of(self, digest: bytes) -> Version | None:
        """The newest version with this text, if kept whole (an older one may hold an older
        doc state)."""
        return next((v for v in reversed(self._versions) if v.digest == digest), None)

    def known_digests(self) -> frozenset[bytes]:
        """The digests of the texts kept whole: the engine's own echoes, as of now."""
        return frozenset(version.digest for version in self._versions)

    def remembers(self, digest: bytes) -> bool:
        """Could a save still start from this version (kept whole or as facts)?"""
        return digest in self.history or any(v.digest == digest for v in self._versions)

    def kept_facts(self, *, with_ids: bool) -> frozenset[Fact]:
        """The facts of every version kept whole."""
        return frozenset[Fact]().union(*(v.facts_of(with_ids=with_ids) for v in self._versions))

    def remember_base(self, digest: bytes, notebook: Notebook, state: bytes) -> None:
        """Restore a version persisted before a restart: the doc state it was read at.

        ``digest`` is ``text_digest`` of the file text; ``notebook`` its content.
        """
        self.push(Version.from_state(digest, state, notebook))

    def remember_past(self, digest: bytes, notebook: Notebook) -> None:
        """Restore a version older than those restored whole: its facts only (see history)."""
        with_ids = keeps_cell_ids(notebook)
        facts = cell_facts(cell_keys(notebook), with_ids=with_ids)
        self.history.add(digest, facts, with_ids=with_ids)

    def record_save(self, base: Version, saved: Version) -> None:
        """A save made from ``base`` was ingested as ``saved``.

        The editor that made this save held at least its base: the base and older versions
        are no longer possible bases (keeping them would turn an undo back to one of them
        into "nothing changed"). Versions the daemon wrote after the base stay: another
        editor (or this one, reloaded) may have read them and will save from them.
        """
        self._forget_up_to(base)
        self.push(saved)
        self.predating_last_save = len(self._versions) - 1

    def push(self, version: Version) -> None:
        """Remember ``version`` as the newest; the oldest beyond the limits become facts."""
        if self._versions:
            share_unchanged_parts(self._versions[-1].notebook, version.notebook)
        self._versions.append(version)
        if version.complete:
            self._latest_complete = version
        older_bytes = sum(len(kept.state) for kept in self._versions) - len(version.state)
        while len(self._versions) > MAX_VERSIONS or older_bytes > MAX_OLDER_STATE_BYTES:
            oldest = self._versions.popleft()
            self.predating_last_save = max(0, self.predating_last_save - 1)
            older_bytes -= len(oldest.state)
            with_ids = keeps_cell_ids(oldest.notebook)
            # Its facts were likely worked out already, to match a save against it.
            self.history.add(oldest.digest, oldest.facts_of(with_ids=with_ids), with_ids=with_ids)

    def _forget_up_to(self, version: Version) -> None:
        if not any(kept is version for kept in self._versions):
            self.history.forget_through(version.digest)  # a recalled version
            return
        self.history.clear()
        while self._versions.popleft() is not version:
            pass
