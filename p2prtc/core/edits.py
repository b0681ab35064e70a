"""Who changed which cell, having seen what: edit stamps, and concurrent edits told apart.

A save that changes cells writes, in the same update, one *stamp* per changed cell into the
doc's ``p2prtc_edits`` map, under the key ``<cell id> <member id>``: that member's edit
counter for the cell, the time, which parts changed, and the counters of the other members'
stamps for that cell that the save's editor had seen (the version the save was diffed
against). The stamps travel with the edits, through relays too, so every member learns who
made a change, and whether two changes to one cell were made without seeing each other:

    A's and B's latest edits of a cell are concurrent when neither had seen the other's
    (``a.saw[B] < b.n`` and ``b.saw[A] < a.n``): a per-cell version vector.

The CRDT then keeps both (the merge never loses either side's text); this module only says
so. Each member writes its own keys only, so stamps never conflict among themselves.

Sans-IO: the caller gives the time and the member; peers' stamps are untrusted input and
anything malformed is ignored.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pycrdt import Doc, Map, MapEvent

from p2prtc.core.notebook import Cell, Notebook

logger = logging.getLogger(__name__)

EDITS = "p2prtc_edits"
# The cell parts a stamp names (anything else a cell holds counts as "other").
PARTS = ("source", "outputs", "metadata", "cell_type", "execution_count", "attachments")
NEW = "new"
DELETED = "deleted"
MOVED = "moved"
KNOWN_PARTS = frozenset({*PARTS, NEW, DELETED, MOVED, "other"})
# Peers' stamps are input: bounded, or ignored. Ids as nbformat allows cell ids.
_MAX_STAMP_BYTES = 4096
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_LATEST_TIME = 2.0**40  # seconds: any real clock is far below


@dataclass(frozen=True)
class Author:
    """Who makes the save being stamped, and when (seconds since the epoch)."""

    member: str
    at: float


@dataclass(frozen=True)
class Stamp:
    """A member's latest change of one cell."""

    cell_id: str
    member: str
    n: int  # that member's edit counter for the cell
    at: float  # by the member's clock
    parts: tuple[str, ...]
    saw: Mapping[str, int] = field(default_factory=dict)  # other members' counters it had

    def encode(self) -> str:
        # Compact (it rides along with every save): whole seconds, no spaces.
        data = {"n": self.n, "at": round(self.at), "parts": self.parts, "saw": self.saw}
        return json.dumps(data, separators=(",", ":"))


@dataclass(frozen=True)
class Concurrent:
    """Two or more members changed a cell without seeing each other's change; both kept."""

    cell_id: str
    members: tuple[str, ...]  # sorted


def stamp_key(cell_id: str, member: str) -> str:
    return f"{cell_id} {member}"


def edits_of(doc: Doc[Any]) -> Map[Any]:
    edits: Map[Any] = doc.get(EDITS, type=Map)
    return edits


def parse_stamp(key: object, value: object) -> Stamp | None:
    """A stamp from the doc, or None for anything malformed (a hostile peer's, say)."""
    if not isinstance(key, str) or not isinstance(value, str) or len(value) > _MAX_STAMP_BYTES:
        return None
    cell_id, _, member = key.rpartition(" ")
    if not _ID.fullmatch(cell_id) or not _ID.fullmatch(member):
        return None
    try:
        data = json.loads(value)
        saw = {str(k): int(v) for k, v in dict(data.get("saw", {})).items()}
        parts = tuple(part for part in data.get("parts", ()) if part in KNOWN_PARTS)
        n, at = int(data["n"]), float(data["at"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if n < 1 or not 0 <= at < _LATEST_TIME:  # also refuses NaN
        return None
    return Stamp(cell_id, member, n, at, parts, saw)


def changed_parts(base: Notebook, new: Notebook) -> dict[str, tuple[str, ...]]:
    """Cell id -> the parts a save changed (new and deleted cells included), by cell id."""
    before = {cell["id"]: cell for cell in base["cells"]}
    after = {cell["id"]: cell for cell in new["cells"]}
    changed: dict[str, tuple[str, ...]] = {
        cell_id: (DELETED,) for cell_id in before.keys() - after.keys()
    }
    moved = _moved(list(before), list(after))
    for cell_id, cell in after.items():
        old = before.get(cell_id)
        parts = (NEW,) if old is None else _differing_parts(old, cell)
        parts += (MOVED,) if cell_id in moved else ()
        if parts:
            changed[cell_id] = parts
    return changed


def _moved(before: list[str], after: list[str]) -> set[str]:
    """The cells kept in both whose order changed: those outside the longest run of cells
    that kept their order (what a user moved, not the cells it moved past)."""
    kept = set(before) & set(after)
    old = [cell_id for cell_id in before if cell_id in kept]
    new = [cell_id for cell_id in after if cell_id in kept]
    if old == new:
        return set()
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    in_order = {
        old[block.a + i] for block in matcher.get_matching_blocks() for i in range(block.size)
    }
    return kept - in_order


def _differing_parts(old: Cell, new: Cell) -> tuple[str, ...]:
    if old == new:  # most cells of a save: one comparison, done in C
        return ()
    parts = tuple(part for part in PARTS if old.get(part) != new.get(part))
    others = (old.keys() | new.keys()) - {*PARTS, "id"}
    if any(old.get(key) != new.get(key) for key in others):
        parts += ("other",)
    return parts


def stamp_cells(
    doc: Doc[Any], changed: Mapping[str, tuple[str, ...]], author: Author, known: Doc[Any]
) -> None:
    """Stamp the changed cells in ``doc``, in one transaction.

    ``doc`` is the doc the save was applied to (the live doc, or a fork at the version the
    save started from): its stamps are what the editor had seen. ``known`` is the live doc,
    whose counters of this member may be newer than the fork's.
    """
    if not changed:
        return
    seen = _cell_stamps(edits_of(doc), changed)
    own = _cell_stamps(edits_of(known), changed)
    with doc.transaction(origin="stamp"):
        edits = edits_of(doc)
        for cell_id, parts in changed.items():
            stamps = seen.get(cell_id, {})
            mine = [s.get(author.member) for s in (stamps, own.get(cell_id, {}))]
            counter = max((stamp.n for stamp in mine if stamp is not None), default=0) + 1
            saw = {member: s.n for member, s in stamps.items() if member != author.member}
            stamp = Stamp(cell_id, author.member, counter, author.at, parts, saw)
            edits[stamp_key(cell_id, author.member)] = stamp.encode()


def _cell_stamps(edits: Map[Any], cell_ids: Iterable[str]) -> dict[str, dict[str, Stamp]]:
    """The stamps of these cells only (a save touches few cells of a large notebook)."""
    wanted = set(cell_ids)
    keys = [key for key in list(edits.keys()) if key.rpartition(" ")[0] in wanted]
    return _stamps_by_cell((key, edits.get(key)) for key in keys)


def _stamps_by_cell(items: Iterable[tuple[object, object]]) -> dict[str, dict[str, Stamp]]:
    by_cell: dict[str, dict[str, Stamp]] = {}
    for key, value in items:
        stamp = parse_stamp(key, value)
        if stamp is not None:
            by_cell.setdefault(stamp.cell_id, {})[stamp.member] = stamp
    return by_cell


def concurrent_with(stamp: Stamp, others: Iterable[Stamp]) -> list[str]:
    """The members whose latest change of the cell was concurrent with ``stamp``."""
    return sorted(
        other.member
        for other in others
        if other.member != stamp.member
        and stamp.saw.get(other.member, 0) < other.n
        and other.saw.get(stamp.member, 0) < stamp.n
    )


class EditTracker:
    """Follows the stamps of a doc: what each transaction stamped, and what was concurrent.

    ``drain`` hands over the stamps that changed since the last call (local saves and
    peers' updates alike) and the concurrent edits they revealed.
    """

    def __init__(self, doc: Doc[Any]) -> None:
        edits = edits_of(doc)
        self._latest = _stamps_by_cell(edits.items())  # cell id -> member -> stamp
        self._new: list[Stamp] = []
        self._concurrent: list[Concurrent] = []
        self._subscription = edits.observe(self._on_change)

    def stamps(self, cell_id: str) -> dict[str, Stamp]:
        """Every member's latest stamp of the cell."""
        return dict(self._latest.get(cell_id, {}))

    def _on_change(self, event: MapEvent) -> None:
        # pycrdt sets ``keys`` (key -> action, oldValue, newValue) but does not declare it.
        changes: dict[str, dict[str, Any]] = event.keys  # type: ignore[attr-defined]
        for key, change in changes.items():
            stamp = parse_stamp(key, change.get("newValue"))
            if stamp is None:
                continue
            stamps = self._latest.setdefault(stamp.cell_id, {})
            stamps[stamp.member] = stamp
            self._new.append(stamp)
            members = concurrent_with(stamp, stamps.values())
            if members:
                found = Concurrent(stamp.cell_id, tuple(sorted({stamp.member, *members})))
                logger.info("concurrent edits of cell %s by %s", found.cell_id, found.members)
                self._concurrent.append(found)

    def drain(self) -> tuple[list[Stamp], list[Concurrent]]:
        """The stamps and concurrent edits seen since the last call."""
        new, concurrent = self._new, self._concurrent
        self._new, self._concurrent = [], []
        return new, _merged_concurrent(concurrent)


def _merged_concurrent(found: list[Concurrent]) -> list[Concurrent]:
    """One entry per cell: a stamp arriving after its rival finds the same pair again."""
    members: dict[str, set[str]] = {}
    for item in found:
        members.setdefault(item.cell_id, set()).update(item.members)
    return [Concurrent(cell_id, tuple(sorted(names))) for cell_id, names in members.items()]
