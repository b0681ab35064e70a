"""The document engine: keeps a notebook file and its shared doc in step (sans-IO).

Saves are merged three-way. The engine remembers the recent *versions* of the file: each
text it read or wrote, with the doc state at that moment. A save is diffed against the
version it derives from (the closest one), and that diff is applied to a fork of the doc at
that version's state; the fork's update then merges into the live doc like a peer's edit.
So remote edits that reached the doc after the editor loaded the file survive a save of the
stale buffer, and nothing is ever diffed against text the user never saw.

The engine owns load, ingest, render and repair, and wires the parts: the versions it
remembers (core.remembered, each a core.snapshot ``Version``) and the choice of a save's
base among them (core.base_choice).
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from pycrdt import Doc, TransactionEvent, merge_updates

from p2prtc.core.base_choice import Recall, Save, choose_base
from p2prtc.core.edits import Author, EditTracker, changed_parts, stamp_cells
from p2prtc.core.ingest import apply_notebook_diff
from p2prtc.core.model import doc_to_notebook, keeps_cell_ids, load_notebook, without_cell_ids
from p2prtc.core.notebook import Notebook, parse_notebook, string_sources
from p2prtc.core.remembered import RememberedVersions
from p2prtc.core.rendering import CellRenderer
from p2prtc.core.repair import Shown, doc_waits_for_updates, repair_cells, survivors
from p2prtc.core.snapshot import Version
from p2prtc.errors import P2PError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestResult:
    """What one save did to the doc."""

    update: bytes | None  # the doc update to persist and send; None when nothing changed
    needs_write: bool  # the doc now differs from the file (remote edits merged in)


def text_digest(text: bytes | str) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    # SHA-256 runs in hardware on current CPUs: 3x faster than blake2b on a 1.7 MB file.
    return hashlib.sha256(raw).digest()[:16]


@dataclass(frozen=True)
class Repaired:
    """What ``NotebookEngine.repair`` learnt of the doc, for the write that follows it in the
    same call (the doc cannot change in between)."""

    update: bytes | None  # the repair's, to persist and send; None: nothing to repair
    notebook: Notebook | None  # the doc's as converted for it, when the repair changed nothing
    # Whether the doc waits for updates (repair.doc_waits_for_updates): a repair's changes
    # are local, they leave that as it was.
    waiting: bool


class NotebookEngine:
    """One shared notebook: a pycrdt Doc plus the recent versions of its file."""

    def __init__(self, doc: Doc[Any]) -> None:
        self.doc = doc
        self.edits = EditTracker(doc)  # who changed which cell; concurrent edits
        self.versions = RememberedVersions()  # the texts a save may start from
        # Cells (by id) whose source the file holds as one string: written back that way.
        self._string_sources: frozenset[str] = frozenset()
        self._renderer = CellRenderer()  # renders again only the cells that changed

    @classmethod
    def load(cls, text: bytes | str) -> NotebookEngine:
        """The sharer's one initial load of the file."""
        nb = parse_notebook(text)
        engine = cls(Doc())
        load_notebook(engine.doc, nb)
        engine.versions.push(Version.of_doc(text_digest(text), engine.notebook(), engine.doc))
        engine.learn_form(text)
        return engine

    def learn_form(self, text: bytes | str) -> None:
        """Note which cells of a file the engine knows hold their source as one string."""
        version = self.versions.version_of(text_digest(text))
        raw = text.encode() if isinstance(text, str) else text
        if version is None:
            return
        if b'"source": "' not in raw and b'"source":"' not in raw:  # spares a parse
            self._string_sources = frozenset()
            return
        ids = [cell["id"] for cell in version.notebook["cells"]]
        self._string_sources = frozenset(ids[index] for index in string_sources(raw))

    def holds_doc(self, text: bytes | str) -> bool:
        """Was this known file text read or written with the doc exactly as it is now (a
        peer's sync that brought nothing since)? Cheap: no conversion of the doc."""
        version = self.versions.version_of(text_digest(text))
        return version is not None and version.is_current(self.doc)

    def shows_doc(self, text: bytes | str, notebook: Notebook | None = None) -> bool:
        """Does this known file text hold what the doc holds (whatever its form)?
        ``notebook`` is the doc's, from ``rendered``, when the caller has it."""
        version = self.versions.version_of(text_digest(text))
        if version is None:
            return False
        return version.notebook == (self.notebook() if notebook is None else notebook)

    def holds(self, text: bytes | str) -> bool:
        """Does this file text, known or not, hold the doc's notebook (whatever its form)?

        A joiner asks it of a file already at its destination: the same notebook is
        adopted, another one is not overwritten unless the user said so. Cell ids count
        only where the file's format has them.
        """
        try:
            found = without_cell_ids(parse_notebook(text))
        except P2PError:
            return False
        return found == without_cell_ids(self.notebook())

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
        """The file text for the current doc, as Jupyter would write it.

        A cell id twice (concurrent moves not repaired yet) is written once: the copy
        ``repair`` keeps, so the file is valid whatever the doc holds.
        """
        return self.rendered()[0]

    def rendered(self, notebook: Notebook | None = None) -> tuple[str, Notebook]:
        """``render``, and the doc's notebook it was made from: ``remember_written`` takes
        it, where converting the doc again would cost as much as the rendering (0.3 s for a
        notebook with 50 MB of images). ``notebook``: the doc's, converted since its last
        change (``repair`` gives it), when the caller has it."""
        notebook = self.notebook() if notebook is None else notebook
        shown = notebook
        ids = [cell["id"] for cell in notebook["cells"]]
        if len(set(ids)) < len(ids):
            kept = survivors(self.doc)
            cells = [cell for index, cell in enumerate(notebook["cells"]) if index in kept]
            shown = {**notebook, "cells": cells}
        keep = [i for i, cell in enumerate(shown["cells"]) if cell["id"] in self._string_sources]
        return self._renderer.render(without_cell_ids(shown), keep), notebook

    def repair(self) -> Repaired:
        """Repair cells moved concurrently with other moves or edits (see core.repair),
        against what the file last showed: the update to persist and send, if any, else the
        doc's notebook as converted for it, which ``rendered`` takes until the doc changes
        (one conversion of a big notebook instead of two)."""
        latest = self.versions.latest_complete()
        notebook = self.notebook()
        waiting = doc_waits_for_updates(self.doc)
        shown = latest.shown if latest else Shown([])
        update = repair_cells(self.doc, shown, notebook["cells"], waiting)
        return Repaired(update, notebook if update is None else None, waiting)

    def full_state(self) -> bytes:
        return self.doc.get_update()

    def remember_written(
        self,
        text: str,
        notebook: Notebook | None = None,
        digest: bytes | None = None,
        waiting: bool | None = None,
    ) -> None:
        """Record a text the daemon wrote (or found on disk equal to the doc) as a version;
        ``notebook`` is the doc's, from ``rendered``, ``digest`` the text's ``text_digest``
        and ``waiting`` the repair's, when the caller has them."""
        notebook = self.notebook() if notebook is None else notebook
        digest = digest or text_digest(text)
        self.versions.push(Version.of_doc(digest, notebook, self.doc, waiting))

    def is_known(self, text: bytes | str) -> bool:
        """True for a text the engine wrote or read: its own echo, or an unchanged save."""
        return self.versions.version_of(text_digest(text)) is not None

    def ingest(
        self, text: bytes | str, recall: Recall | None = None, author: Author | None = None
    ) -> IngestResult:
        """Merge a save of the file into the doc. Raises InvalidNotebook & co. untouched.

        ``recall`` rebuilds older versions, for a save of a buffer older than the versions
        kept whole; without it such a save is merged against the closest kept version.
        With an ``author``, the update stamps the cells it changes (see core.edits).
        """
        digest = text_digest(text)
        known = self.versions.version_of(digest)
        if known is not None:
            return IngestResult(update=None, needs_write=not known.is_current(self.doc))
        new = parse_notebook(text)
        base = choose_base(Save(new), self.versions, recall)
        current = None if base.is_current(self.doc) else self.notebook()
        if current is None:
            ingested, update = apply_save(self.doc, self.doc, base.notebook, new, author)
            # A save's changes are local: the doc waits for updates as it did at ``base``.
            saved = Version.of_doc(digest, ingested, self.doc, base.waiting)
            needs_write = False
        elif without_cell_ids(current) == new:
            # The save holds the doc as it is now (its changes since ``base`` included):
            # merged against ``base``, those changes would apply twice.
            ingested, update, saved = current, None, Version.of_doc(digest, current, self.doc)
            needs_write = False
        else:
            shown_before = self.versions.latest_complete()
            ingested, update, saved = ingest_on_fork(self.doc, base, new, digest, author)
            if update is not None:
                self.doc.apply_update(update)
                # Typing into a cell a peer moved meanwhile went to the original.
                update = merge_repair(update, repair_cells(self.doc, saved.shown))
                if shown_before is not None:
                    # A cell the save moves is a copy of the cell as the (stale) buffer had
                    # it: the lines peers typed into it since, which the file showed, go
                    # into the copy too.
                    update = merge_repair(update, repair_cells(self.doc, shown_before.shown))
            needs_write = self.notebook() != ingested
        if not base.complete:
            saved = replace(saved, from_complete=False)
        self.versions.record_save(base, saved)
        self.learn_form(text)
        needs_write = needs_write or ids_reassigned(new, ingested)
        logger.debug("ingested a save: changed=%s needs_write=%s", update is not None, needs_write)
        return IngestResult(update=update, needs_write=needs_write)


def ingest_on_fork(
    live: Doc[Any], base: Version, new: Notebook, digest: bytes, author: Author | None
) -> tuple[Notebook, bytes | None, Version]:
    """Apply the save to a copy of the doc at ``base``; the edit merges like a peer's."""
    # A fresh client id: the live doc may have made edits under its own id since base.
    fork: Doc[Any] = Doc(client_id=random.getrandbits(32))
    fork.apply_update(base.state)
    ingested, update = apply_save(fork, live, base.notebook, new, author)
    logger.info("merged a save made from an older version of the file")
    # The version is the saved text itself (a file without ids, or not written the way
    # Jupyter writes, never renders back to it): a second save of it is then known.
    return ingested, update, Version.of_doc(digest, ingested, fork)


def apply_save(
    doc: Doc[Any], live: Doc[Any], base: Notebook, new: Notebook, author: Author | None
) -> tuple[Notebook, bytes | None]:
    """Apply a save's diff to ``doc`` (``live``, the engine's doc, or a fork of it) and stamp
    the cells it changed (by what ``doc`` holds: the version the editor had); the update of
    both."""
    ingested, update = apply_diff_observed(doc, base, new)
    if author is None or update is None:
        return ingested, update
    changed = changed_parts(base, ingested)
    stamp = observed_update(doc, lambda: stamp_cells(doc, changed, author, live))
    return ingested, update if stamp is None else merge_updates(update, stamp)


def merge_repair(update: bytes, repair: bytes | None) -> bytes:
    return update if repair is None else merge_updates(update, repair)


def apply_diff_observed(
    doc: Doc[Any], base: Notebook, new: Notebook
) -> tuple[Notebook, bytes | None]:
    """``apply_notebook_diff``, plus the update of exactly its transaction (None: no change).

    The update is taken from the transaction, not from the state vector: deletions do not
    advance a state vector, so a save that only deletes would otherwise look like no change.
    """
    ingested: list[Notebook] = []
    update = observed_update(doc, lambda: ingested.append(apply_notebook_diff(doc, base, new)))
    return ingested[0], update


def observed_update(doc: Doc[Any], action: Callable[[], object]) -> bytes | None:
    """Run ``action``; the update of the one transaction it made (None: no change)."""
    updates: list[bytes] = []

    def record(event: TransactionEvent) -> None:
        updates.append(event.update)

    subscription = doc.observe(record)
    try:
        action()
    finally:
        doc.unobserve(subscription)
    return updates[0] if updates else None


def ids_reassigned(new: Notebook, ingested: Notebook) -> bool:
    """A file with ids whose ids the doc had to change (a pasted copy kept its id)."""
    return keeps_cell_ids(new) and any(
        cell.get("id") != done["id"]
        for cell, done in zip(new["cells"], ingested["cells"], strict=True)
    )
