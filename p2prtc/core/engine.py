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
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import orjson
from pycrdt import Doc, TransactionEvent, merge_updates

from p2prtc.core.edits import Author, EditTracker, changed_parts, stamp_cells
from p2prtc.core.history import CellKey, Fact, VersionHistory, cell_facts, cells_in, is_order
from p2prtc.core.ingest import apply_notebook_diff, changed_characters, changed_lines
from p2prtc.core.model import doc_to_notebook, keeps_cell_ids, load_notebook, without_cell_ids
from p2prtc.core.notebook import Notebook, parse_notebook, render_notebook, string_sources
from p2prtc.core.repair import Shown, repair_cells, survivors
from p2prtc.core.statevector import StateVector, decode_state_vector
from p2prtc.errors import P2PError

logger = logging.getLogger(__name__)

# Versions kept whole (notebook and doc state); older ones are remembered as facts only.
MAX_VERSIONS = 8
# ... and at most this many bytes of doc states besides the newest version's: each whole
# version holds a full state (1.75 MB for the 1.7 MB sample, 50 MB for a notebook with 50 MB
# of images). Beyond it, older versions go to the facts too, rebuilt from the caller's log
# only if a stale save needs them.
MAX_OLDER_STATE_BYTES = 8 * 2**20

# Rebuilds the doc state of an older version, by its digest (from the caller's update log);
# None when it cannot.
Recall = Callable[[bytes], bytes | None]


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

    @cached_property
    def sources_by_id(self) -> dict[str, str]:
        return {cell["id"]: cell["source"] for cell in self.notebook["cells"]}

    @cached_property
    def facts(self) -> frozenset[Fact]:
        return cell_facts(cell_keys(self.notebook), with_ids=False)

    @cached_property
    def facts_with_ids(self) -> frozenset[Fact]:
        return cell_facts(cell_keys(self.notebook), with_ids=True)

    def facts_of(self, *, with_ids: bool) -> frozenset[Fact]:
        return self.facts_with_ids if with_ids else self.facts

    @cached_property
    def shown(self) -> Shown:
        """Its cells, and the doc items that held them when asked (to tell a moved cell's
        copy)."""
        cells = [(cell["id"], cell["source"]) for cell in self.notebook["cells"]]
        return Shown(cells, state=self.state)

    def distance(self, new: Notebook, by_id: dict[str, str] | None) -> Distance:
        if by_id is not None:
            return id_distance(self.sources_by_id, by_id)
        return edit_distance(self.sources, source_counts(new))


@dataclass(frozen=True)
class Save:
    """A save being ingested, and what matching it against the versions needs."""

    notebook: Notebook

    @cached_property
    def by_id(self) -> dict[str, str] | None:
        return sources_by_id(self.notebook)

    @cached_property
    def facts(self) -> frozenset[Fact]:
        return cell_facts(cell_keys(self.notebook), with_ids=self.by_id is not None)


@dataclass(frozen=True)
class IngestResult:
    """What one save did to the doc."""

    update: bytes | None  # the doc update to persist and send; None when nothing changed
    needs_write: bool  # the doc now differs from the file (remote edits merged in)


def text_digest(text: bytes | str) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    # SHA-256 runs in hardware on current CPUs: 3x faster than blake2b on a 1.7 MB file.
    return hashlib.sha256(raw).digest()[:16]


class NotebookEngine:
    """One shared notebook: a pycrdt Doc plus the recent versions of its file."""

    def __init__(self, doc: Doc[Any]) -> None:
        self.doc = doc
        self.edits = EditTracker(doc)  # who changed which cell; concurrent edits
        # At most MAX_VERSIONS and MAX_OLDER_STATE_BYTES, oldest first.
        self._versions: deque[Version] = deque()
        self._history = VersionHistory()  # the versions before those
        # The oldest this many versions were written before the last save was made from an
        # older one: that editor never held them, only a second editor may.
        self._predating_last_save = 0
        # Cells (by id) whose source the file holds as one string: written back that way.
        self._string_sources: frozenset[str] = frozenset()

    @classmethod
    def load(cls, text: bytes | str) -> NotebookEngine:
        """The sharer's one initial load of the file."""
        nb = parse_notebook(text)
        engine = cls(Doc())
        load_notebook(engine.doc, nb)
        engine._remember(text_digest(text), engine.notebook())
        engine.learn_form(text)
        return engine

    def learn_form(self, text: bytes | str) -> None:
        """Note which cells of a file the engine knows hold their source as one string."""
        version = self._version_of(text_digest(text))
        raw = text.encode() if isinstance(text, str) else text
        if version is None:
            return
        if b'"source": "' not in raw and b'"source":"' not in raw:  # spares a parse
            self._string_sources = frozenset()
            return
        ids = [cell["id"] for cell in version.notebook["cells"]]
        self._string_sources = frozenset(ids[index] for index in string_sources(raw))

    def _version_of(self, digest: bytes) -> Version | None:
        """The newest version with this text, if the engine keeps it whole."""
        return next((v for v in reversed(self._versions) if v.digest == digest), None)

    def holds_doc(self, text: bytes | str) -> bool:
        """Was this known file text read or written with the doc exactly as it is now (a
        peer's sync that brought nothing since)? Cheap: no conversion of the doc."""
        version = self._version_of(text_digest(text))
        return version is not None and self._is_current(version)

    def shows_doc(self, text: bytes | str, notebook: Notebook | None = None) -> bool:
        """Does this known file text hold what the doc holds (whatever its form)?
        ``notebook`` is the doc's, from ``rendered``, when the caller has it."""
        version = self._version_of(text_digest(text))
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
        return render_notebook(without_cell_ids(shown), keep), notebook

    def repair(self) -> tuple[bytes | None, Notebook | None]:
        """Repair cells moved concurrently with other moves or edits (see core.repair),
        against what the file last showed: the update to persist and send, if any, else the
        doc's notebook as converted for it, which ``rendered`` takes until the doc changes
        (one conversion of a big notebook instead of two)."""
        latest = self.latest_version()
        notebook = self.notebook()
        update = repair_cells(self.doc, latest.shown if latest else Shown([]), notebook["cells"])
        return update, notebook if update is None else None

    def full_state(self) -> bytes:
        return self.doc.get_update()

    def remember_written(
        self, text: str, notebook: Notebook | None = None, digest: bytes | None = None
    ) -> None:
        """Record a text the daemon wrote (or found on disk equal to the doc) as a version;
        ``notebook`` is the doc's, from ``rendered``, and ``digest`` the text's
        ``text_digest``, when the caller has them."""
        notebook = self.notebook() if notebook is None else notebook
        self._remember(digest or text_digest(text), notebook)

    def remember_base(self, digest: bytes, notebook: Notebook, state: bytes) -> None:
        """Restore a version persisted before a restart: the doc state it was read at.

        ``digest`` is ``text_digest`` of the file text; ``notebook`` its content.
        """
        self._push(self._version(digest, notebook, state))

    def remember_past(self, digest: bytes, notebook: Notebook) -> None:
        """Restore a version older than those restored whole: its facts only (see history)."""
        with_ids = keeps_cell_ids(notebook)
        facts = cell_facts(cell_keys(notebook), with_ids=with_ids)
        self._history.add(digest, facts, with_ids=with_ids)

    def is_known(self, text: bytes | str) -> bool:
        """True for a text the engine wrote or read: its own echo, or an unchanged save."""
        digest = text_digest(text)
        return any(version.digest == digest for version in self._versions)

    def known_digests(self) -> frozenset[bytes]:
        """The digests of the texts ``is_known`` accepts, as of now."""
        return frozenset(version.digest for version in self._versions)

    def remembers(self, digest: bytes) -> bool:
        """Could a save still start from this version (kept whole or as facts)?"""
        return digest in self._history or any(v.digest == digest for v in self._versions)

    def latest_version(self) -> Version | None:
        return self._versions[-1] if self._versions else None

    def ingest(
        self, text: bytes | str, recall: Recall | None = None, author: Author | None = None
    ) -> IngestResult:
        """Merge a save of the file into the doc. Raises InvalidNotebook & co. untouched.

        ``recall`` rebuilds older versions, for a save of a buffer older than the versions
        kept whole; without it such a save is merged against the closest kept version.
        With an ``author``, the update stamps the cells it changes (see core.edits).
        """
        digest = text_digest(text)
        if any(version.digest == digest for version in self._versions):
            return IngestResult(update=None, needs_write=self._doc_differs_from(digest))
        new = parse_notebook(text)
        save = Save(new)
        recalled = self._recalled(save, recall)
        predating = len(recalled) + self._predating_last_save
        base = self._closest_version(save, [*recalled, *self._versions], predating)
        if base is None:
            raise RuntimeError("ingest before the engine knows any version of the file")
        current = None if self._is_current(base) else self.notebook()
        if current is None:
            ingested, update = self._apply_save(self.doc, base.notebook, new, author)
            saved = self._snapshot(digest, ingested)
            needs_write = False
        elif without_cell_ids(current) == new:
            # The save holds the doc as it is now (its changes since ``base`` included):
            # merged against ``base``, those changes would apply twice.
            ingested, update, saved = current, None, self._snapshot(digest, current)
            needs_write = False
        else:
            shown_before = self.latest_version()
            ingested, update, saved = self._ingest_on_fork(base, new, digest, author)
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
        # The editor that made this save held at least its base: the base and older versions
        # are no longer possible bases (keeping them would turn an undo back to one of them
        # into "nothing changed"). Versions the daemon wrote after the base stay: another
        # editor (or this one, reloaded) may have read them and will save from them.
        self._forget_up_to(base)
        self._push(saved)
        self._predating_last_save = len(self._versions) - 1
        self.learn_form(text)
        needs_write = needs_write or ids_reassigned(new, ingested)
        logger.debug("ingested a save: changed=%s needs_write=%s", update is not None, needs_write)
        return IngestResult(update=update, needs_write=needs_write)

    def _ingest_on_fork(
        self, base: Version, new: Notebook, digest: bytes, author: Author | None
    ) -> tuple[Notebook, bytes | None, Version]:
        """Apply the save to a copy of the doc at ``base``; the edit merges like a peer's."""
        # A fresh client id: the live doc may have made edits under its own id since base.
        fork: Doc[Any] = Doc(client_id=random.getrandbits(32))
        fork.apply_update(base.state)
        ingested, update = self._apply_save(fork, base.notebook, new, author)
        logger.info("merged a save made from an older version of the file")
        # The version is the saved text itself (a file without ids, or not written the way
        # Jupyter writes, never renders back to it): a second save of it is then known.
        return (
            ingested,
            update,
            Version(digest, ingested, fork.get_update(), state_vector(fork)),
        )

    def _apply_save(
        self, doc: Doc[Any], base: Notebook, new: Notebook, author: Author | None
    ) -> tuple[Notebook, bytes | None]:
        """Apply a save's diff to ``doc`` (live or fork) and stamp the cells it changed (by
        what ``doc`` holds: the version the editor had); the update of both."""
        ingested, update = apply_diff_observed(doc, base, new)
        if author is None or update is None:
            return ingested, update
        changed = changed_parts(base, ingested)
        stamp = observed_update(doc, lambda: stamp_cells(doc, changed, author, self.doc))
        return ingested, update if stamp is None else merge_updates(update, stamp)

    def _doc_differs_from(self, digest: bytes) -> bool:
        # The newest version with this text: an older one may hold an older doc state.
        version = next(v for v in reversed(self._versions) if v.digest == digest)
        return not self._is_current(version)

    def _is_current(self, version: Version) -> bool:
        """Does the doc still hold exactly this version?

        Equal state vectors are not enough: a peer's deletions do not advance a state vector,
        and a diff against the version would then land at shifted offsets. Equal encodings
        are proof; an encoding that differs for an equal doc only costs the fork path.
        """
        if version.state_vector != state_vector(self.doc):
            return False
        return version.state == self.doc.get_update()

    def _recalled(self, save: Save, recall: Recall | None) -> list[Version]:
        """The older versions a save may have started from, oldest first (usually none).

        Only asked for when the save has facts that no version kept whole has and an older
        version had: a cell as it was before a peer changed or deleted it, an order since
        changed. A fact no version had is just the user's edit.
        """
        if recall is None or not self._history:
            return []
        with_ids = save.by_id is not None
        kept = frozenset[Fact]().union(*(v.facts_of(with_ids=with_ids) for v in self._versions))
        unknown = save.facts - kept
        if not self._history.knows_any(unknown, with_ids=with_ids) and not self._edits_older_cell(
            save, kept, with_ids=with_ids
        ):
            return []
        recalled = []
        for digest in self._history.candidates(save.facts, with_ids=with_ids):
            state = recall(digest)
            if state is not None:
                doc: Doc[Any] = Doc()
                doc.apply_update(state)
                recalled.append(Version(digest, doc_to_notebook(doc), state, state_vector(doc)))
        logger.info("a save older than the kept versions: %d older ones recalled", len(recalled))
        return recalled

    def _edits_older_cell(self, save: Save, kept: frozenset[Fact], *, with_ids: bool) -> bool:
        """Is a cell the save changed (a cell no version kept whole has: ``kept``, their
        facts) more like that cell in an older version than in any version kept whole?

        A peer typed into a cell since the stale buffer was read, and every kept version
        has its line; the user typed into the same cell: no fact of the save is only an
        older version's, but the cell's lines are. Merged against a kept version, the save
        would replace the peer's line with the user's (chaos seed 935607494).
        """
        saved_cells = cells_in(save.facts)
        kept_cells = cells_in(kept)
        edited = saved_cells - kept_cells
        if not edited:
            return False
        older = self._history.cells(with_ids=with_ids) - kept_cells
        # Kept cells the save changed (or deleted): an edited cell is one of them, or new.
        replaced = kept_cells - saved_cells
        budget = MAX_PAIRINGS
        for cell_id, source in edited:
            olds = [old for old_id, old in older if old_id == cell_id]
            news = [new for new_id, new in replaced if new_id == cell_id]
            budget -= len(olds) + len(news)
            if not olds:
                continue
            if budget < 0:
                return True  # too many to compare: let the closest version decide
            nearest_older = min(changed_lines(old, source) for old in olds)
            if not news or nearest_older < min(changed_lines(new, source) for new in news):
                return True
        return False

    def _closest_version(
        self, save: Save, versions: list[Version], predating: int
    ) -> Version | None:
        """The version the save most likely started from.

        First, evidence. A cell of the save that only a newer version has (a cell as a peer
        changed or created it, an id) proves the editor had that newer version: taken as the
        base, an older one would make the merge apply the peer's change once more (a doubled
        line, a re-created cell). A cell that only older versions have (a cell as it was
        before a peer changed or deleted it) says the editor is stale, unless the user undid
        the peer's change; it weighs less. An order of cells another version has is no proof
        (the user's own move may put two cells next to each other as a peer's did, or a cell
        at the end as a peer's move did): orders weigh least, after the size of the edit
        (merged against the newer version, the save deleted the cells the peer had added
        meanwhile: long stale runs, seed 303). A fact only the first ``predating`` versions
        have (written before the last save, which was made from an older one: only a second
        editor may hold them) is no evidence against the later ones: the user deleting a
        line they typed can make the very cell such a version had. Then, with cell ids, the
        fewest cells the save would delete that the oldest version lacks too (the editor may
        never have seen them: seed 1620), then the smallest edit of the sources, then the
        orders, then the fewest other differences (outputs, metadata: a stale save must not
        revert a peer's outputs just because the newest version has them), then the newest.
        """
        if len(versions) <= 1:
            return versions[-1] if versions else None
        new, by_id = save.notebook, save.by_id
        facts = [v.facts_of(with_ids=by_id is not None) for v in versions]
        newest_with = {fact: i for i, version_facts in enumerate(facts) for fact in version_facts}

        def unseen_deletions(index: int) -> int:
            # Cells (by id) the save lacks that the oldest version lacks too: taken as the
            # base, this version makes the save delete cells the editor may never have
            # seen (seed 1620 of the long stale runs). Without ids an edited cell looks
            # deleted too: not counted.
            if by_id is None:
                return 0
            oldest = versions[0].sources_by_id.keys()
            return len(versions[index].sources_by_id.keys() - by_id.keys() - oldest)

        def score(index: int) -> tuple[int, int, int, Distance, int]:
            # Facts of the save this version lacks, found in others: proof, or not (cell
            # orders: soak seeds 461, 758, a stale editor's move deleted a peer's new cell
            # or reverted its line, merged against the peer's version).
            found = [
                (newest_with[f], is_order(f))
                for f in save.facts - facts[index]
                if f in newest_with and (index < predating or newest_with[f] >= predating)
            ]
            proof = sum(1 for found_in, order in found if found_in > index and not order)
            orders = sum(1 for _, order in found if order)
            stale = len(found) - proof - orders
            distance = versions[index].distance(new, by_id)
            return proof, stale, unseen_deletions(index), distance, orders

        scores = [score(index) for index in range(len(versions))]
        best = min(scores)
        closest = [v for v, s in zip(versions, scores, strict=True) if s == best][::-1]
        if len(closest) == 1:
            return closest[0]
        new_parts = part_counts(new)
        return min(closest, key=lambda version: counter_distance(version.parts, new_parts))

    def _forget_up_to(self, version: Version) -> None:
        if not any(kept is version for kept in self._versions):
            self._history.forget_through(version.digest)  # a recalled version
            return
        self._history.clear()
        while self._versions.popleft() is not version:
            pass

    def _push(self, version: Version) -> None:
        if self._versions:
            share_unchanged_parts(self._versions[-1].notebook, version.notebook)
        self._versions.append(version)
        older_bytes = sum(len(kept.state) for kept in self._versions) - len(version.state)
        while len(self._versions) > MAX_VERSIONS or older_bytes > MAX_OLDER_STATE_BYTES:
            oldest = self._versions.popleft()
            self._predating_last_save = max(0, self._predating_last_save - 1)
            older_bytes -= len(oldest.state)
            with_ids = keeps_cell_ids(oldest.notebook)
            # Its facts were likely worked out already, to match a save against it.
            self._history.add(oldest.digest, oldest.facts_of(with_ids=with_ids), with_ids=with_ids)

    def _remember(self, digest: bytes, notebook: Notebook) -> None:
        self._push(self._snapshot(digest, notebook))

    def _snapshot(self, digest: bytes, notebook: Notebook) -> Version:
        """A version of the live doc as it is now."""
        return Version(digest, notebook, self.doc.get_update(), state_vector(self.doc))

    def _version(self, digest: bytes, notebook: Notebook, state: bytes) -> Version:
        doc: Doc[Any] = Doc()
        doc.apply_update(state)
        return Version(digest, notebook, state, state_vector(doc))


def merge_repair(update: bytes, repair: bytes | None) -> bytes:
    return update if repair is None else merge_updates(update, repair)


def state_vector(doc: Doc[Any]) -> StateVector:
    return decode_state_vector(doc.get_state())


def cell_keys(nb: Notebook) -> list[CellKey]:
    """Each cell's id and source: what facts are made of."""
    return [(str(cell.get("id")), cell["source"]) for cell in nb["cells"]]


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


Distance = tuple[int, int, int]  # cells, lines, characters that differ


def edit_distance(base: Counter[str], new: Counter[str]) -> Distance:
    """How far apart two notebooks' sources are, for files without cell ids.

    Cells equal in both cost nothing; the others are paired in order and their sources
    diffed, so of two versions that differ in the same cell, the one the save started from
    wins. Lines count before characters: typing a line into a stale buffer, next to a line a
    peer added, is one inserted line from the true base but only a few changed characters
    from the version that holds the peer's line (which would then be overwritten).
    """
    added = list((new - base).elements())
    removed = list((base - new).elements())
    pairs, unpaired = _paired(removed, added)
    return (
        max(len(added), len(removed)),
        sum(changed_lines(old, new) for old, new in pairs) + sum(map(line_count, unpaired)),
        sum(changed_characters(old, new) for old, new in pairs) + sum(map(len, unpaired)),
    )


# Pairing changed cells by likeness costs a diff per pair: beyond this many pairs, in order.
MAX_PAIRINGS = 256


def _paired(removed: list[str], added: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """Removed and added sources paired as edits, and those left unpaired: each added one
    (in sorted order) with the most alike removed one left. Pairs in file order depended on
    the version's cell order: of two versions with the same sources, the one that put the
    edited cell first looked closer (a cell moved, then edited:
    test_saves_after_concurrent_moves_of_one_cell)."""
    if len(removed) * len(added) > MAX_PAIRINGS:
        count = min(len(removed), len(added))
        return list(zip(removed, added, strict=False)), added[count:] + removed[count:]
    left, pairs, unpaired = sorted(removed), [], []
    for source in sorted(added):
        if not left:
            unpaired.append(source)
            continue
        alike = min(
            left, key=lambda old: (changed_lines(old, source), changed_characters(old, source))
        )
        left.remove(alike)
        pairs.append((alike, source))
    return pairs, unpaired + left


def id_distance(base: dict[str, str], new: dict[str, str]) -> Distance:
    """``edit_distance`` for files with cell ids: cells are paired by id, not by guess.

    A cell whose id one side lacks costs twice an edited cell: a stale buffer still holds
    the cells a peer deleted since, and a version that lacks them must not look closer
    (merged against it, the save would re-create those cells) than the version the buffer
    came from, where the same save is a small edit.
    """
    cells = lines = chars = 0
    for cell_id in base.keys() | new.keys():
        old, now = base.get(cell_id), new.get(cell_id)
        if old == now:
            continue
        if old is not None and now is not None:
            cells += 1
            lines += changed_lines(old, now)
            chars += changed_characters(old, now)
        else:
            source = old if now is None else now
            assert source is not None
            cells += 2
            lines += line_count(source)
            chars += len(source)
    return cells, lines, chars


def line_count(source: str) -> int:
    return source.count("\n") + 1


def sources_by_id(nb: Notebook) -> dict[str, str] | None:
    """Cell id -> source, for a file whose cells all have distinct ids; else None."""
    ids = [cell.get("id") for cell in nb["cells"]]
    if not keeps_cell_ids(nb) or not all(isinstance(i, str) and i for i in ids):
        return None
    by_id = {cell["id"]: cell["source"] for cell in nb["cells"]}
    return by_id if len(by_id) == len(ids) else None


def share_unchanged_parts(previous: Notebook, notebook: Notebook) -> None:
    """Point ``notebook``'s unchanged cell parts at ``previous``'s objects, in place.

    Successive versions differ in a few cells, but each is parsed afresh: without this, every
    remembered version of a notebook with big outputs holds its own copy of every image.
    """
    prior_cells = {cell.get("id"): cell for cell in previous["cells"]}
    for cell in notebook["cells"]:
        prior = prior_cells.get(cell.get("id"))
        if prior is None:
            continue
        for key in ("outputs", "attachments", "metadata", "source"):
            if key in cell and key in prior and cell[key] == prior[key]:
                cell[key] = prior[key]
