"""The document engine: keeps a notebook file and its shared doc in step (sans-IO).

Saves are merged three-way. The engine remembers the recent *versions* of the file: each
text it read or wrote, with the doc state at that moment. A save is diffed against the
version it derives from (the closest one), and that diff is applied to a fork of the doc at
that version's state; the fork's update then merges into the live doc like a peer's edit.
So remote edits that reached the doc after the editor loaded the file survive a save of the
stale buffer, and nothing is ever diffed against text the user never saw.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import Counter, deque
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import orjson
from pycrdt import Doc, TransactionEvent

from p2prtc.core.ingest import apply_notebook_diff, changed_characters, changed_lines
from p2prtc.core.model import doc_to_notebook, keeps_cell_ids, load_notebook, without_cell_ids
from p2prtc.core.notebook import Notebook, parse_notebook, render_notebook
from p2prtc.core.statevector import StateVector, decode_state_vector

logger = logging.getLogger(__name__)

MAX_VERSIONS = 8


@dataclass(frozen=True)
class Version:
    """A file text the engine read or wrote, with the doc as it was then."""

    digest: bytes
    notebook: Notebook  # joined form, every cell with the doc's id
    state: bytes  # full doc update at that moment
    state_vector: StateVector

    @cached_property
    def sources(self) -> Counter[str]:
        return source_counts(self.notebook)

    @cached_property
    def parts(self) -> Counter[bytes]:
        return part_counts(self.notebook)


@dataclass(frozen=True)
class IngestResult:
    """What one save did to the doc."""

    update: bytes | None  # the doc update to persist and send; None when nothing changed
    needs_write: bool  # the doc now differs from the file (remote edits merged in)


def text_digest(text: bytes | str) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return hashlib.blake2b(raw, digest_size=16).digest()


class NotebookEngine:
    """One shared notebook: a pycrdt Doc plus the recent versions of its file."""

    def __init__(self, doc: Doc[Any]) -> None:
        self.doc = doc
        self._versions: deque[Version] = deque(maxlen=MAX_VERSIONS)

    @classmethod
    def load(cls, text: bytes | str) -> NotebookEngine:
        """The sharer's one initial load of the file."""
        nb = parse_notebook(text)
        engine = cls(Doc())
        load_notebook(engine.doc, nb)
        engine._remember(text_digest(text), engine.notebook())
        return engine

    @classmethod
    def from_updates(cls, updates: list[bytes]) -> NotebookEngine:
        """A doc rebuilt from stored or received updates (a joiner never loads its file)."""
        doc: Doc[Any] = Doc()
        for update in updates:
            doc.apply_update(update)
        return cls(doc)

    def notebook(self) -> Notebook:
        """The doc's notebook, joined form, cells with ids."""
        return doc_to_notebook(self.doc)

    def render(self) -> str:
        """The file text for the current doc, as Jupyter would write it."""
        return render_notebook(without_cell_ids(self.notebook()))

    def full_state(self) -> bytes:
        return self.doc.get_update()

    def remember_written(self, text: str) -> None:
        """Record a text the daemon wrote (or found on disk equal to the doc) as a version."""
        self._remember(text_digest(text), self.notebook())

    def remember_base(self, text: bytes | str, notebook: Notebook, state: bytes) -> None:
        """Restore a version persisted before a restart: the doc state it was read at."""
        self._versions.append(self._version(text_digest(text), notebook, state))

    def is_known(self, text: bytes | str) -> bool:
        """True for a text the engine wrote or read: its own echo, or an unchanged save."""
        digest = text_digest(text)
        return any(version.digest == digest for version in self._versions)

    def latest_version(self) -> Version | None:
        return self._versions[-1] if self._versions else None

    def ingest(self, text: bytes | str) -> IngestResult:
        """Merge a save of the file into the doc. Raises InvalidNotebook & co. untouched."""
        digest = text_digest(text)
        if any(version.digest == digest for version in self._versions):
            return IngestResult(update=None, needs_write=self._doc_differs_from(digest))
        new = parse_notebook(text)
        base = self._closest_version(new)
        if base is None:
            raise RuntimeError("ingest before the engine knows any version of the file")
        if base.state_vector == decode_state_vector(self.doc.get_state()):
            ingested, update = apply_diff_observed(self.doc, base.notebook, new)
            saved = self._snapshot(digest, ingested)
            needs_write = False
        else:
            ingested, update, saved = self._ingest_on_fork(base, new, digest)
            if update is not None:
                self.doc.apply_update(update)
            needs_write = self.notebook() != ingested
        # The editor that made this save held at least this text: older versions are no
        # longer possible bases, and keeping them would turn an undo back to one of them
        # into "nothing changed".
        self._versions.clear()
        self._versions.append(saved)
        needs_write = needs_write or ids_reassigned(new, ingested)
        logger.debug("ingested a save: changed=%s needs_write=%s", update is not None, needs_write)
        return IngestResult(update=update, needs_write=needs_write)

    def _ingest_on_fork(
        self, base: Version, new: Notebook, digest: bytes
    ) -> tuple[Notebook, bytes | None, Version]:
        """Apply the save to a copy of the doc at ``base``; the edit merges like a peer's."""
        # A fresh client id: the live doc may have made edits under its own id since base.
        fork: Doc[Any] = Doc(client_id=random.getrandbits(32))
        fork.apply_update(base.state)
        ingested, update = apply_diff_observed(fork, base.notebook, new)
        logger.info("merged a save made from an older version of the file")
        # The version is the saved text itself (a file without ids, or not written the way
        # Jupyter writes, never renders back to it): a second save of it is then known.
        return (
            ingested,
            update,
            Version(digest, ingested, fork.get_update(), decode_state_vector(fork.get_state())),
        )

    def _doc_differs_from(self, digest: bytes) -> bool:
        # The newest version with this text: an older one may hold an older doc state.
        version = next(v for v in reversed(self._versions) if v.digest == digest)
        return version.state_vector != decode_state_vector(self.doc.get_state())

    def _closest_version(self, new: Notebook) -> Version | None:
        """The version the save most likely started from: the smallest edit, then the newest.

        Sources decide; among versions with equally close sources, the one with the fewest
        other differences (outputs, metadata) wins, so that a stale save does not revert a
        peer's outputs just because the newest version has them.
        """
        closest: list[Version] = []
        best_distance: tuple[int, int, int] | None = None
        new_sources = source_counts(new)
        for version in reversed(self._versions):
            distance = edit_distance(version.sources, new_sources)
            if best_distance is None or distance < best_distance:
                closest, best_distance = [version], distance
            elif distance == best_distance:
                closest.append(version)
        if len(closest) <= 1:
            return closest[0] if closest else None
        new_parts = part_counts(new)
        return min(closest, key=lambda version: counter_distance(version.parts, new_parts))

    def _remember(self, digest: bytes, notebook: Notebook) -> None:
        self._versions.append(self._snapshot(digest, notebook))

    def _snapshot(self, digest: bytes, notebook: Notebook) -> Version:
        """A version of the live doc as it is now."""
        state_vector = decode_state_vector(self.doc.get_state())
        return Version(digest, notebook, self.doc.get_update(), state_vector)

    def _version(self, digest: bytes, notebook: Notebook, state: bytes) -> Version:
        doc: Doc[Any] = Doc()
        doc.apply_update(state)
        return Version(digest, notebook, state, decode_state_vector(doc.get_state()))


def apply_diff_observed(
    doc: Doc[Any], base: Notebook, new: Notebook
) -> tuple[Notebook, bytes | None]:
    """``apply_notebook_diff``, plus the update of exactly its transaction (None: no change).

    The update is taken from the transaction, not from the state vector: deletions do not
    advance a state vector, so a save that only deletes would otherwise look like no change.
    """
    updates: list[bytes] = []

    def record(event: TransactionEvent) -> None:
        updates.append(event.update)

    subscription = doc.observe(record)
    try:
        ingested = apply_notebook_diff(doc, base, new)
    finally:
        doc.unobserve(subscription)
    return ingested, updates[0] if updates else None


def ids_reassigned(new: Notebook, ingested: Notebook) -> bool:
    """A file with ids whose ids the doc had to change (a pasted copy kept its id)."""
    return keeps_cell_ids(new) and any(
        cell.get("id") != done["id"]
        for cell, done in zip(new["cells"], ingested["cells"], strict=True)
    )


def source_counts(nb: Notebook) -> Counter[str]:
    return Counter(cell["source"] for cell in nb["cells"])


def part_counts(nb: Notebook) -> Counter[bytes]:
    """Every cell (without its id) and the notebook metadata, as comparable fingerprints."""
    parts = [{key: value for key, value in cell.items() if key != "id"} for cell in nb["cells"]]
    return Counter(_fingerprint(part) for part in [nb["metadata"], *parts])


def _fingerprint(value: Any) -> bytes:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # integers beyond 64 bits
        return json.dumps(value, sort_keys=True).encode()


def counter_distance(base: Counter[Any], new: Counter[Any]) -> int:
    return max(sum((new - base).values()), sum((base - new).values()))


def edit_distance(base: Counter[str], new: Counter[str]) -> tuple[int, int, int]:
    """(cells, lines, characters that differ): smallest for the true base.

    Cells equal in both cost nothing; the others are paired in order and their sources
    diffed, so of two versions that differ in the same cell, the one the save started from
    wins. Lines count before characters: typing a line into a stale buffer, next to a line a
    peer added, is one inserted line from the true base but only a few changed characters
    from the version that holds the peer's line (which would then be overwritten).
    """
    added = list((new - base).elements())
    removed = list((base - new).elements())
    pairs = list(zip(removed, added, strict=False))
    unpaired = added[len(removed) :] + removed[len(added) :]
    lines = sum(changed_lines(old, new) for old, new in pairs)
    chars = sum(changed_characters(old, new) for old, new in pairs)
    return (
        max(len(added), len(removed)),
        lines + sum(source.count("\n") + 1 for source in unpaired),
        chars + sum(map(len, unpaired)),
    )
