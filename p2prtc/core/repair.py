"""Moved cells, repaired the same way on every peer: one copy per cell id, no edit lost.

A Y array cannot move an element: p2prtc, like JupyterLab's collaboration, moves a cell by
deleting it and inserting a copy. Two things then go wrong under concurrency:

- Two peers move one cell at once: two copies with one id (an invalid nbformat 4.5 file).
  The copy that comes first in the array is kept (every peer orders the same items the same
  way), the text the others have and it lacks is transplanted into it, and they are deleted.
- A peer types into a cell another moves: the typing lands in the deleted original. A peer
  that still shows the typing (its file has it, or it is the save being merged) sees the
  cell's id now held by another Map item: it transplants the text the copy lacks.

A transplant only inserts (a text the copy lacks might be a deletion made with the move, or
the user's new text: nothing is lost, a deletion concurrent with a move may come back). Its
insertions are encoded by hand as Yjs items whose neighbours (origin, right origin) are the
copy's characters around the spot and whose client id is a hash of everything in them, so
two peers that compute the same transplant produce the same items, which Yjs then holds
once, and two that compute different ones can never produce one item id with two contents.
Deleting a copy is idempotent as it is. Sans-IO: docs in, an update out.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pycrdt import Array, Assoc, Doc, Text, TransactionEvent, merge_updates

from p2prtc.core.ingest import line_aligned_diff
from p2prtc.core.model import cells_of
from p2prtc.core.statevector import decode_state_vector

logger = logging.getLogger(__name__)

ItemId = tuple[int, int]  # (client, clock) of a Yjs item

_DIFF_INSERT, _DIFF_EQUAL = 1, 0
_CONTENT_STRING = 4  # Yjs struct info: the content type, plus these flags
_HAS_ORIGIN, _HAS_RIGHT_ORIGIN = 0x80, 0x40


@dataclass(frozen=True)
class CellCopy:
    """A cell as a file showed it: its id, the Map item that held it, and its source (in
    the doc of that moment, to tell which item each character came from)."""

    cell_id: str
    item: ItemId
    source: Text


def cell_items(doc: Doc[Any]) -> list[ItemId]:
    """The Yjs item id of each cell's Map, in order."""
    cells = cells_of(doc)
    return [_sticky_item(cells, index, Assoc.AFTER) for index in range(len(cells))]


def cell_copies(doc: Doc[Any]) -> list[CellCopy]:
    cells = cells_of(doc)
    return [
        CellCopy(str(cell.get("id")), item, cell["source"])
        for cell, item in zip(cells, cell_items(doc), strict=True)
        if isinstance(cell.get("source"), Text)
    ]


def repair_cells(doc: Doc[Any], shown: list[CellCopy]) -> bytes | None:
    """Repair moved cells in ``doc``; the update to persist and send (None: nothing to do).

    ``shown`` is the cells as the file (or the save being merged) last showed them.
    """
    updates: list[bytes] = []
    subscription = doc.observe(lambda event: _record(updates, event))
    try:
        _merge_duplicates(doc)
        _recover_replaced(doc, shown)
    finally:
        doc.unobserve(subscription)
    if not updates:
        return None
    return updates[0] if len(updates) == 1 else merge_updates(*updates)


def _record(updates: list[bytes], event: TransactionEvent) -> None:
    updates.append(event.update)


def _merge_duplicates(doc: Doc[Any]) -> None:
    by_id: dict[str, list[CellCopy]] = defaultdict(list)
    for copy in cell_copies(doc):
        by_id[copy.cell_id].append(copy)
    repeated = [copies for copies in by_id.values() if len(copies) > 1]
    if not repeated:
        return
    for keep, *others in repeated:
        for other in others:
            _transplant(doc, keep.source, other.source)
    logger.info("kept one copy of %d cells that were moved concurrently", len(repeated))
    doomed = {copy.item for _, *others in repeated for copy in others}
    with doc.transaction(origin="repair"):
        cells = cells_of(doc)
        for index, item in reversed(list(enumerate(cell_items(doc)))):
            if item in doomed:
                del cells[index]


def _recover_replaced(doc: Doc[Any], shown: list[CellCopy]) -> None:
    """Text a replaced cell showed and its copy lacks goes into the copy."""
    now = {copy.cell_id: copy for copy in cell_copies(doc)}
    alive = {copy.item for copy in now.values()}
    for old in shown:
        copy = now.get(old.cell_id)
        if copy is not None and old.item not in alive:
            _transplant(doc, copy.source, old.source)
        # else: deleted (the deletion wins), or the same Map still holds the cell


def _transplant(doc: Doc[Any], target: Text, old: Text) -> None:
    """Insert into ``target`` the text ``old`` has and it lacks.

    One Yjs item per run of ``old`` that one item held (one edit, usually), with a client
    id that hashes the run's origin and everything in the new item: a peer that misses
    only some of the runs transplants those exactly as another peer does.
    """
    known = _clients(doc)
    runs = [run for run in _missing_runs(target, old) if run[0] not in known]
    if runs:
        logger.info("transplanted %d edits into a moved cell", len(runs))
        doc.apply_update(encode_insertions(runs))


def _clients(doc: Doc[Any]) -> set[int]:
    return set(decode_state_vector(doc.get_state()))


@dataclass(frozen=True)
class Insertion:
    """A run of text to insert between two characters (None: that end of the text); in an
    empty text, under its parent item instead."""

    origin: ItemId | None
    right: ItemId | None
    parent: ItemId | None
    text: str


def _missing_runs(target: Text, old: Text) -> Iterator[tuple[int, Insertion]]:
    """Each run of ``old`` that ``target`` lacks, as an insertion with its client id."""
    now, before = str(target), str(old)
    position = 0  # in ``target``, in UTF-16 units as Yjs counts
    old_position = 0  # in ``old``
    end = _utf16_len(now)
    parent = _parent_item(target) if not now else None
    for op, chunk in line_aligned_diff(now, before):
        size = _utf16_len(chunk)
        if op == _DIFF_INSERT:
            origin = None if position == 0 else _sticky_item(target, position, Assoc.BEFORE)
            right = None if position == end else _sticky_item(target, position, Assoc.AFTER)
            for first, text in _item_runs(old, old_position, chunk):
                insertion = Insertion(origin, right, parent, text)
                seed = repr((first, insertion)).encode()
                yield int.from_bytes(hashlib.sha256(seed).digest()[:4], "big"), insertion
            old_position += size
        elif op == _DIFF_EQUAL:
            position += size
            old_position += size
        else:  # text only the target has: kept
            position += size


def _item_runs(text: Text, start: int, chunk: str) -> Iterator[tuple[ItemId, str]]:
    """``chunk`` (at UTF-16 ``start`` in ``text``) cut where its characters stop coming
    from one item, each piece with the id of its first character."""
    position, piece, first, last = start, "", (-1, -1), (-1, -1)
    for char in chunk:
        item = _sticky_item(text, position, Assoc.AFTER)
        if piece and item != (last[0], last[1] + 1):
            yield first, piece
            piece = ""
        if not piece:
            first = item
        piece += char
        width = _utf16_len(char)
        last = (item[0], item[1] + width - 1)
        position += width
    if piece:
        yield first, piece


def _sticky_item(sequence: Text | Array[Any], position: int, assoc: Assoc) -> ItemId:
    """The element before (or at) a position, never at the sequence's ends."""
    item = sequence.sticky_index(position, assoc).to_json()["item"]
    return int(item["client"]), int(item["clock"])


def _parent_item(text: Text) -> ItemId:
    """The item that holds the text (the cell's "source" entry)."""
    scope = text.sticky_index(0, Assoc.BEFORE).to_json()["type"]
    return int(scope["client"]), int(scope["clock"])


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def encode_insertions(runs: list[tuple[int, Insertion]]) -> bytes:
    """A Yjs v1 update of string items, one per client (clock 0), and no deletions."""
    out = bytearray()
    _var_uint(out, len(runs))
    for client, insert in runs:
        _var_uint(out, 1)  # one struct
        _var_uint(out, client)
        _var_uint(out, 0)  # its clock
        info = _CONTENT_STRING
        info |= _HAS_ORIGIN if insert.origin is not None else 0
        info |= _HAS_RIGHT_ORIGIN if insert.right is not None else 0
        out.append(info)
        for neighbour in (insert.origin, insert.right):
            if neighbour is not None:
                _var_uint(out, neighbour[0])
                _var_uint(out, neighbour[1])
        if insert.origin is None and insert.right is None:
            # An empty text: the item names its parent (0: by item id, not a root name).
            if insert.parent is None:
                raise ValueError("an insertion into an empty text needs its parent")
            _var_uint(out, 0)
            _var_uint(out, insert.parent[0])
            _var_uint(out, insert.parent[1])
        data = insert.text.encode()
        _var_uint(out, len(data))
        out += data
    _var_uint(out, 0)  # the delete set: empty
    return bytes(out)


def _var_uint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
