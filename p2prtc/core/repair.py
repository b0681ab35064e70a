"""Moved cells, repaired the same way on every peer: one copy per cell id, no edit lost.

A Y array cannot move an element: p2prtc, like JupyterLab's collaboration, moves a cell by
deleting it and inserting a copy. Two things then go wrong under concurrency:

- Two peers move one cell at once: two copies with one id (an invalid nbformat 4.5 file).
  The copy whose Map item has the smallest id (client, clock) is kept, the lines the others
  have and it lacks are transplanted into it, and they are deleted.
- A peer types into a cell another moves: the typing lands in the deleted original. A peer
  that still shows the typing (its file has it, or it is the save being merged) sees the
  cell's id now held by another Map item: it transplants the text the copy lacks.

A move p2prtc makes records what its copy was made from (the state vector of the version
the save started from, in the doc's ``p2prtc_moves`` root): a peer then transplants only
what the mover never saw, and a line made only of that whole. For moves without a record
(other clients'), text the copy lacks may be a deletion made with the move or the user's
typing: a transplant only inserts, so nothing is lost and such a deletion may come back. Each
missing line becomes one Yjs item, made by yrs itself on a copy of the doc under a client
id that hashes the item (its text and the two items Yjs puts it between): two peers that
compute the same line produce the same item, which Yjs then holds once, and two that
compute different ones never produce one item id with two contents. (Items encoded by hand
with neighbours Yjs would not choose made peers' docs diverge: found by the property test.)
Deleting a copy is idempotent as it is. Sans-IO: docs in, an update out.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

from diff_match_patch import diff_match_patch
from pycrdt import Array, Assoc, Doc, Text, TransactionEvent, get_update, merge_updates

from p2prtc.core.model import cells_of, moves_of, shared_to_py
from p2prtc.core.statevector import StateVector, decode_state_vector

logger = logging.getLogger(__name__)

ItemId = tuple[int, int]  # (client, clock) of a Yjs item
# Per character of a text a transplant comes from: did the mover of the copy never see it
# (True), see it (False: it deleted it knowingly), or is that unknown (None)?
Unseen = list[bool | None]

_DIFF_INSERT, _DIFF_EQUAL, _DIFF_DELETE = 1, 0, -1
_differ = diff_match_patch()
_HAS_ORIGIN, _HAS_RIGHT_ORIGIN = 0x80, 0x40
# Client ids of transplanted lines (see _client_of).
_TRANSPLANTS = range(2**32, 2**33)
# The client of the scratch doc that asks Yjs where an insertion goes (never sent).
_SCRATCH_CLIENT = 1
# Separates, in a move record, the state vector (hex) from the item the copy was made from.
_MADE_FROM = " "


@dataclass(frozen=True)
class CellCopy:
    """A cell as a file showed it: its id, the Map item that held it, and its source."""

    cell_id: str
    item: ItemId
    source: str
    index: int


@dataclass
class Shown:
    """The cells a file showed (ids and sources, in order) and, found only when a repair
    needs them, the Map items that held them: from ``items``, or the doc ``state`` of then."""

    cells: list[tuple[str, str]]
    state: bytes = b""
    items: list[ItemId] | None = None
    _doc: Doc[Any] | None = None

    @classmethod
    def of(cls, doc: Doc[Any]) -> Shown:
        """What a doc shows now."""
        copies = cell_copies(doc)
        return cls([(c.cell_id, c.source) for c in copies], items=[c.item for c in copies])

    def item(self, position: int) -> ItemId:
        if self.items is None:
            self.items = cell_items(self.doc())
        # A version whose text and state disagree in length: no item, so never "the same".
        return self.items[position] if position < len(self.items) else (-1, -1)

    def doc(self) -> Doc[Any]:
        """The doc as it was (empty without a ``state``)."""
        if self._doc is None:
            self._doc = Doc()
            self._doc.apply_update(self.state)
        return self._doc

    def source(self, position: int) -> Text | None:
        """Cell ``position``'s source as the doc held it, if it matches the text shown."""
        cells = cells_of(self.doc())
        source = cells[position].get("source") if position < len(cells) else None
        shown = self.cells[position][1]
        return source if isinstance(source, Text) and str(source) == shown else None


def cell_items(doc: Doc[Any]) -> list[ItemId]:
    """The Yjs item id of each cell's Map, in order."""
    cells = cells_of(doc)
    return [cell_item(cells, index) for index in range(len(cells))]


def cell_item(cells: Array[Any], index: int) -> ItemId:
    """The Yjs item id of cell ``index``'s Map."""
    return _sticky_item(cells, index, Assoc.AFTER)


def cell_copies(doc: Doc[Any]) -> list[CellCopy]:
    cells = cells_of(doc)
    return [
        CellCopy(str(cell.get("id")), item, str(cell.get("source", "")), index)
        for index, (cell, item) in enumerate(zip(cells, cell_items(doc), strict=True))
    ]


def repair_cells(
    doc: Doc[Any],
    shown: Shown,
    now: list[dict[str, Any]] | None = None,
    waiting: bool | None = None,
) -> bytes | None:
    """Repair moved cells in ``doc``; the update to persist and send (None: nothing to do).

    ``shown`` is the cells as the file (or the save being merged) last showed them; ``now``
    the doc's cells as plain values (their ids and sources), and ``waiting`` whether the doc
    waits for updates (``doc_waits_for_updates``), when the caller has them.
    """
    if doc_waits_for_updates(doc) if waiting is None else waiting:
        # An update came before one it builds on: yrs shows its insertions but holds its
        # deletions back, so a moved cell shows twice until the missing update arrives
        # (the sync session asks for it at once). Repairing now would delete the real copy.
        logger.debug("not repairing moved cells: the doc waits for missing updates")
        return None
    updates: list[bytes] = []
    subscription = doc.observe(lambda event: _record(updates, event))
    try:
        now = shared_to_py(cells_of(doc)) if now is None else now
        if _merge_duplicates(doc, now):
            now = shared_to_py(cells_of(doc))
        _recover_replaced(doc, now, shown)
        _drop_doubled_transplants(doc)
    finally:
        doc.unobserve(subscription)
    if not updates:
        return None
    return updates[0] if len(updates) == 1 else merge_updates(*updates)


def doc_waits_for_updates(doc: Doc[Any]) -> bool:
    """Does ``doc`` hold back part of an update that came before one it builds on?"""
    return waits_for_updates(doc.get_update(), doc.get_state())


def waits_for_updates(state: bytes, state_vector: bytes) -> bool:
    """Does a doc (its full ``state`` and its encoded ``state_vector``) hold items beyond its
    own state vector (an update applied before one it builds on)? Its state diffed against
    its state vector then names a client."""
    return get_update(state, state_vector)[:1] != b"\x00"


def _record(updates: list[bytes], event: TransactionEvent) -> None:
    updates.append(event.update)


def _merge_duplicates(doc: Doc[Any], now: list[dict[str, Any]]) -> bool:
    """Keep one copy of each cell id (``now``: the cells as plain values); did it?"""
    ids = [str(cell.get("id")) for cell in now]
    if len(set(ids)) == len(ids):
        return False
    by_id: dict[str, list[CellCopy]] = defaultdict(list)
    for copy in cell_copies(doc):
        by_id[copy.cell_id].append(copy)
    repeated = [
        sorted(copies, key=lambda copy: _lineage(doc, copy.item))
        for copies in by_id.values()
        if len(copies) > 1
    ]
    for keep, *others in repeated:
        for other in others:
            _transplant(doc, keep.index, other.source, _typed_after_move(doc, other))
    logger.info("kept one copy of %d cells that were moved concurrently", len(repeated))
    doomed = {copy.item for _, *others in repeated for copy in others}
    with doc.transaction(origin="repair"):
        cells = cells_of(doc)
        for index, item in reversed(list(enumerate(cell_items(doc)))):
            if item in doomed:
                del cells[index]
    return True


def _lineage(doc: Doc[Any], item: ItemId) -> list[ItemId]:
    """What ranks the copies of a cell: the one whose lineage comes first stays.

    A copy's lineage is the Map items it descends from by p2prtc moves (their records say
    what each copy was made from), oldest first, then its own item. Compared in order, two
    lineages differ first at two moves of one cell: the copy descending from the move
    whose copy has the smaller item stays. A peer that has not seen a later move of a copy
    ranks the copy it knows as its descendant, so peers that know different moves still
    keep the same branch: with items alone, a peer that saw B moved on to C kept D over C
    while a peer that had not kept B over D, and every copy went (long stale runs, seeds
    192 and others). Moves other clients make have no record: a lineage of one item.
    """
    lineage = [item]
    while True:
        record = _record_of(doc, lineage[-1])
        made_from = record[1] if record is not None else None
        if made_from is None or made_from in lineage:
            return lineage[::-1]
        lineage.append(made_from)


def survivors(doc: Doc[Any]) -> set[int]:
    """The indexes of the cells a repair keeps (each id's copy that ranks first)."""
    kept: dict[str, tuple[list[ItemId], int]] = {}
    for copy in cell_copies(doc):
        lineage = _lineage(doc, copy.item)
        if copy.cell_id not in kept or lineage < kept[copy.cell_id][0]:
            kept[copy.cell_id] = (lineage, copy.index)
    return {index for _, index in kept.values()}


def _recover_replaced(doc: Doc[Any], now: list[dict[str, Any]], shown: Shown) -> None:
    """Text a replaced cell showed and its copy lacks goes into the copy.

    Cheap first: only a cell whose text now lacks some of what the file showed is looked
    at, and only then is its Map item compared (a peer's deletion in the same Map stays).
    """
    index_of = {str(cell.get("id")): index for index, cell in enumerate(now)}
    for position, (cell_id, old) in enumerate(shown.cells):
        index = index_of.get(cell_id)
        if index is None:
            continue  # deleted: the deletion wins
        source = str(now[index].get("source", ""))
        if source == old or not missing_spans(source, old):
            continue
        item = _sticky_item(cells_of(doc), index, Assoc.AFTER)
        if item == shown.item(position):
            continue
        unseen = _unseen_by_mover(doc, item, shown, position)
        if unseen is None or any(unseen):
            _transplant(doc, index, old, unseen)


def record_move(doc: Doc[Any], index: int, seen: bytes, made_from: ItemId) -> None:
    """Note that cell ``index`` is a copy a move made of the cell Map item ``made_from``, in
    a doc whose state vector was ``seen``: what a peer's file showed of it beyond that is
    what the mover never saw; what else the copy lacks, the mover deleted knowingly. And
    the copy ranks as the cell it was made from (see ``_lineage``)."""
    item = cell_item(cells_of(doc), index)
    moves_of(doc)[_key(item)] = f"{seen.hex()}{_MADE_FROM}{_key(made_from)}"


def _record_of(doc: Doc[Any], item: ItemId) -> tuple[StateVector, ItemId | None] | None:
    """The move record of copy ``item``: the state vector the mover had seen, and the item
    it was made from (None in records made before it was noted). None without a record,
    or for one that does not parse (a peer's doc is input: it never crashes a repair)."""
    record = moves_of(doc).get(_key(item))
    if not isinstance(record, str):
        return None
    seen, _, made_from = record.partition(_MADE_FROM)
    try:
        vector = decode_state_vector(bytes.fromhex(seen))
        if not made_from:
            return vector, None
        client, clock = made_from.split(":")
        return vector, (int(client), int(clock))
    except (ValueError, IndexError):
        logger.warning("ignoring a move record that does not parse: %r", record[:80])
        return None


def _unseen_by_mover(doc: Doc[Any], item: ItemId, shown: Shown, position: int) -> Unseen | None:
    """For each character the file showed in cell ``position``: had the move that made the
    copy ``item`` not seen it? None when unknown (a move another client made, a version
    without a state)."""
    record = _record_of(doc, item)
    source = shown.source(position) if record is not None and shown.state else None
    if record is None or source is None:
        return None
    mover = record[0]
    unseen: Unseen = []
    unit = 0
    for character in str(source):
        client, clock = _sticky_item(source, unit, Assoc.AFTER)
        unseen.append(clock >= mover.get(client, 0))
        unit += _utf16_len(character)
    return unseen


def _typed_after_move(doc: Doc[Any], copy: CellCopy) -> Unseen:
    """For each character of ``copy``'s source: True where typed into it after it was made
    (another client than the copy's made it), else unknown. The copy a repair keeps was made
    apart from it, so such a line is new to it: transplanted whole, never as characters
    added to a line that looks alike ("<t121>" into "<t1>", which a peer deleted: "21" was
    left glued to the cell's first line, seed 265)."""
    source = cells_of(doc)[copy.index].get("source")
    if not isinstance(source, Text):
        return []
    flags: Unseen = []
    unit = 0
    for character in copy.source:
        flags.append(True if _client_at(source, unit) != copy.item[0] else None)
        unit += _utf16_len(character)
    return flags


def _key(item: ItemId) -> str:
    return f"{item[0]}:{item[1]}"


def _transplant(doc: Doc[Any], index: int, old: str, unseen: Unseen | None = None) -> None:
    """Insert into cell ``index``'s source the lines ``old`` has and it lacks.

    Each line goes in as its own Yjs item, made by yrs on a copy of the doc under a client
    id that hashes the item (its text and the two items Yjs puts it between): a peer that
    misses only some of the lines transplants those exactly as another peer does, the same
    item, which Yjs then holds once. Lines stay whole in whatever order Yjs puts them.
    """
    now = cells_of(doc)[index].get("source")
    if not isinstance(now, Text):
        return
    state, vector, known = doc.get_update(), doc.get_state(), _clients(doc)
    items = []
    for offset, line in _missing_lines(str(now), old, unseen):
        probe = _insert_on_copy(state, vector, index, offset, line, _SCRATCH_CLIENT)
        client = _client_of(_read_neighbours(probe), line)
        if client not in known:
            items.append(_insert_on_copy(state, vector, index, offset, line, client))
    if items:
        logger.info("transplanted %d lines into a moved cell", len(items))
        doc.apply_update(merge_updates(*items))


def _clients(doc: Doc[Any]) -> set[int]:
    return set(decode_state_vector(doc.get_state()))


def _missing_lines(now: str, old: str, unseen: Unseen | None) -> Iterator[tuple[int, str]]:
    """Each line of ``old`` that ``now`` lacks, with the UTF-8 offset in ``now`` (pycrdt's
    Text index) where it goes."""
    for at, start, size in missing_spans(now, old, unseen):
        offset = len(now[:at].encode())
        # A last line without newline that goes before another line takes the added one.
        for line in _lines((old + "\n")[start : start + size]):
            yield offset, line


def _insert_on_copy(
    state: bytes, vector: bytes, index: int, offset: int, text: str, client: int
) -> bytes:
    """The update of inserting ``text`` at ``offset`` of cell ``index``'s source, made by
    ``client`` on a copy of the doc (``state``, whose state vector is ``vector``)."""
    scratch: Doc[Any] = Doc(client_id=client)
    scratch.apply_update(state)
    source = cells_of(scratch)[index]["source"]
    assert isinstance(source, Text)
    source.insert(offset, text)
    return scratch.get_update(vector)


Neighbours = tuple[ItemId | None, ItemId | None, ItemId | None]  # origin, right, parent


def _read_neighbours(update: bytes) -> Neighbours:
    """The origin, right origin and parent of the one item in a v1 update."""
    reader = _Reader(update)
    for _ in range(4):  # 1 client, 1 struct, its client and clock
        reader.var_uint()
    info = reader.byte()
    origin = reader.item_id() if info & _HAS_ORIGIN else None
    right = reader.item_id() if info & _HAS_RIGHT_ORIGIN else None
    parent = None
    if origin is None and right is None and reader.var_uint() == 0:  # 0: by item id
        parent = reader.item_id()
    return origin, right, parent


class _Reader:
    """lib0 decoding, just what ``_read_neighbours`` needs."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def byte(self) -> int:
        self._at += 1
        return self._data[self._at - 1]

    def var_uint(self) -> int:
        value = shift = 0
        while True:
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    def item_id(self) -> ItemId:
        return self.var_uint(), self.var_uint()


def _client_of(neighbours: Neighbours, text: str) -> int:
    """A client id that stands for the whole item, in a range of its own (2^32 to 2^33):
    Yjs (JavaScript) clients draw 32-bit ids, yrs ones 53-bit ids, so a client there is a
    transplant (one chance in two million for a yrs client)."""
    digest = hashlib.sha256(repr((neighbours, text)).encode()).digest()
    return _TRANSPLANTS.start + int.from_bytes(digest[:4], "big")


def _drop_doubled_transplants(doc: Doc[Any]) -> None:
    """A line a transplant made that is in its cell twice goes, once per extra copy.

    Peers that saw different parts of a moved cell may place one missing line between
    different neighbours: two items, one line twice. Kept: the line typed by a user if there
    is one, else the transplant with the smallest client id (every peer that sees both keeps
    the same one). Blank lines are left alone. A line may also come out glued to the one
    before or after it (a peer typed it while another deleted the newline between them, and
    a peer showed it so): a line made of a transplant and another part, split where its
    makers change, counts as its two parts, each one copy of its text. Only looked for once
    the doc holds any transplant, and only in cells with a repeated or glued line.
    """
    if not any(client in _TRANSPLANTS for client in _clients(doc)):
        return
    for index, cell in enumerate(shared_to_py(cells_of(doc))):
        lines = str(cell.get("source", "")).split("\n")
        counts = Counter(line for line in lines if line.strip())
        if max(counts.values(), default=0) < 2 and not any(_cuts(line, counts) for line in counts):
            continue
        source = cells_of(doc)[index]["source"]
        assert isinstance(source, Text)
        doomed = _doubled_transplants(source, counts)
        for start, stop in sorted(doomed, reverse=True):
            del source[start:stop]
        if doomed:
            logger.info("dropped %d lines two transplants had doubled", len(doomed))


def _cuts(line: str, lines: Collection[str]) -> list[int]:
    """Where ``line`` may be two lines glued: its first or last part is another line of
    the cell, or both parts are the same."""
    return [
        cut
        for cut in range(1, len(line))
        if line[:cut] in lines or line[cut:] in lines or line[:cut] == line[cut:]
    ]


@dataclass(frozen=True)
class _Line:
    start: int  # UTF-16 units, as Yjs counts
    stop: int
    transplant: int | None  # the transplant client that made all of it
    glued: bool = False  # a part of a line (it goes without a newline)


def _doubled_transplants(source: Text, counts: Counter[str]) -> list[tuple[int, int]]:
    """The UTF-8 spans to delete: extra copies of repeated lines made by transplants."""
    text = str(source)
    spans, at = [], 0
    for line in text.split("\n"):
        spans.append((line, at, at + _utf16_len(line)))
        at += _utf16_len(line) + 1
    occurrences: dict[str, list[_Line]] = defaultdict(list)
    for line, start, _ in spans:
        if counts[line] < 2:
            for part, copy in _glued(source, line, start, counts):
                occurrences[part].append(copy)
    for line, start, stop in spans:
        if line.strip() and (counts[line] > 1 or line in occurrences):
            occurrences[line].append(_Line(start, stop, _made_by_transplant(source, start, stop)))
    doomed = []
    for copies in occurrences.values():
        made = sorted((line for line in copies if line.transplant is not None), key=_by_client)
        extra = made if len(made) < len(copies) else made[1:]  # a typed one stays, or one
        doomed += [
            (line.start, line.stop) if line.glued else _with_its_newline(source, line, at - 1)
            for line in extra
        ]
    utf16 = text.encode("utf-16-le")
    return [(_utf8_offset(utf16, start), _utf8_offset(utf16, stop)) for start, stop in doomed]


def _glued(source: Text, line: str, at: int, lines: Collection[str]) -> list[tuple[str, _Line]]:
    """The parts of ``line`` (at ``at``) that are copies of a line, if it is two lines
    glued: split where one transplant's characters end and another maker's begin."""
    for cut in _cuts(line, lines):
        middle = at + _utf16_len(line[:cut])
        first = _made_by_transplant(source, at, middle)
        second = _made_by_transplant(source, middle, at + _utf16_len(line))
        if first == second or not _starts_a_run(source, middle, first, second):
            continue
        parts = [(line[:cut], _Line(at, middle, first, glued=True))]
        parts.append((line[cut:], _Line(middle, at + _utf16_len(line), second, glued=True)))
        # A typed part is no copy of a line elsewhere (a user's line may begin as another
        # ends), unless the two parts are one line twice.
        twice = line[:cut] == line[cut:]
        return [(part, c) for part, c in parts if (twice or c.transplant) and part.strip()]
    return []


def _starts_a_run(source: Text, middle: int, first: int | None, second: int | None) -> bool:
    """Is ``middle`` where one transplant's run ends or begins (the other side made by
    another maker)? A line one transplant made whole is no glued line."""
    if first is not None:
        return _client_at(source, middle) != first
    return second is not None and _client_at(source, middle - 1) != second


def _made_by_transplant(source: Text, start: int, stop: int) -> int | None:
    """The transplant client that made all of ``source[start:stop]`` (UTF-16), if one did."""
    made_by = {_client_at(source, position) for position in range(start, stop)}
    client = made_by.pop() if len(made_by) == 1 else -1
    # (Only ints: ``None in range(...)`` would walk the whole range.)
    return client if client in _TRANSPLANTS else None


def _by_client(line: _Line) -> int:
    return line.transplant or 0


def _with_its_newline(source: Text, line: _Line, end: int) -> tuple[int, int]:
    """The line's span, with the newline its transplant brought (after it, or before)."""
    if line.stop < end and _client_at(source, line.stop) == line.transplant:
        return line.start, line.stop + 1
    if line.start > 0 and _client_at(source, line.start - 1) == line.transplant:
        return line.start - 1, line.stop
    return line.start, line.stop


def _client_at(source: Text, position: int) -> int:
    return _sticky_item(source, position, Assoc.AFTER)[0]


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _utf8_offset(utf16: bytes, units: int) -> int:
    """A UTF-16 offset as the UTF-8 offset pycrdt's Text index takes."""
    return len(utf16[: 2 * units].decode("utf-16-le").encode())


def _lines(chunk: str) -> list[str]:
    """Lines with their newline; led by it when the chunk starts with one (added after a
    last line that has none)."""
    if chunk.startswith("\n") and len(chunk) > 1:
        return ["\n" + line for line in chunk[1:].split("\n")]
    return chunk.splitlines(keepends=True)


def missing_spans(
    now: str, before: str, unseen: Unseen | None = None
) -> list[tuple[int, int, int]]:
    """What ``before`` has and ``now`` lacks: (where in ``now``, where in ``before``, how
    many characters), in characters.

    Lines are the unit (a character diff aligns "<t2>\n<t3>" with "<t102>\n<t2>" by
    pieces of both). Where lines of ``before`` replace lines of ``now``, a line that only
    adds characters to one of those gives the characters, any other line is added whole.
    Both texts get a final newline, so that a last line without one still matches.

    ``unseen`` (per character of ``before``, when known) says what the mover of the cell
    never saw: a line made only of such characters is new, added whole even where it looks
    like an old line extended ("<t101>" typed where "<t1>" was deleted); a span the mover
    saw all of, it deleted knowingly, and it is not missing. (None for a character: not
    known.)
    """
    a, b, lines = _differ.diff_linesToChars(now + "\n", before + "\n")
    diffs = _differ.diff_main(a, b, False)
    _differ.diff_charsToLines(diffs, lines)
    spans: list[tuple[int, int, int]] = []
    at = start = 0
    for index, (op, chunk) in enumerate(diffs):
        if op == _DIFF_INSERT:
            replaced = diffs[index - 1][1] if index and diffs[index - 1][0] == _DIFF_DELETE else ""
            added = _added(replaced, chunk, at, start, unseen)
            spans += [_within(len(now), span) for span in added if _new_to(unseen, span)]
            start += len(chunk)
        elif op == _DIFF_EQUAL:
            at += len(chunk)
            start += len(chunk)
        else:
            at += len(chunk)
    return spans


def _new_to(unseen: Unseen | None, span: tuple[int, int, int]) -> bool:
    """Did the mover not see some of the span (or is that unknown)?"""
    _, start, size = span
    if unseen is None or start + size > len(unseen):
        return True
    return any(flag is not False for flag in unseen[start : start + size])


def _added(
    old: str, new: str, at: int, start: int, unseen: Unseen | None
) -> Iterator[tuple[int, int, int]]:
    """The spans of ``new`` (at ``start``) that ``old``, the lines it replaces (which end
    at ``at``), lacks. Lines glued by a merge (a typed line and a deleted newline) make
    such blocks: where ``old`` holds all of ``new``, nothing; where ``old`` is lines of
    ``new`` glued, the newlines and lines it lacks."""
    if not old:
        yield from _added_lines(old, new, at, start, unseen)
    elif _unglues(old, new):
        yield from _added_characters(old, new, at - len(old), start)
    elif not _only_adds(new, old):
        yield from _added_lines(old, new, at - len(old), start, unseen)


def _unglues(old: str, new: str) -> bool:
    """Is ``new`` ``old`` with newlines and whole lines added (no line of ``new`` partly
    in ``old``)? Then ``old`` holds lines of ``new`` glued ("#c1new" against "#c1",
    "new", "old"). A line partly there is another line that looks alike ("<t1>" against
    "<t108>"): characters added into it would make neither."""
    added = []  # per character of new: added, or kept from old
    for op, chunk in _differ.diff_main(old, new, False):
        if op == _DIFF_DELETE:
            return False
        added += [op == _DIFF_INSERT] * len(chunk)
    at = 0
    for line in new.split("\n"):
        if len(set(added[at : at + len(line)])) > 1:
            return False
        at += len(line) + 1
    return True


def _added_lines(
    old: str, new: str, at: int, start: int, unseen: Unseen | None
) -> Iterator[tuple[int, int, int]]:
    """The spans of ``new`` (at ``start``) that ``old`` (at ``at``), which it replaces,
    lacks: each new line extends the next old line it can, or is added before it (a line
    the mover never saw any of is new: added)."""
    old_lines = old.splitlines(keepends=True)
    offsets = [at + sum(map(len, old_lines[:index])) for index in range(len(old_lines) + 1)]
    cursor = 0  # the next old line a new line may extend
    for line in new.splitlines(keepends=True):
        text = range(start, start + len(line.rstrip("\n")))
        new_line = unseen is not None and bool(text) and all(unseen[i] for i in text)
        extensible = range(cursor, len(old_lines)) if not new_line else range(0)
        extended = next((i for i in extensible if _only_adds(old_lines[i], line)), None)
        if extended is None:
            yield offsets[cursor], start, len(line)
        else:
            yield from _added_characters(old_lines[extended], line, offsets[extended], start)
            cursor = extended + 1
        start += len(line)


def _within(length: int, span: tuple[int, int, int]) -> tuple[int, int, int]:
    """A span placed after the added final newline: that newline goes first instead."""
    at, start, size = span
    return (length, start - 1, size) if at > length else span


def _only_adds(old: str, new: str) -> bool:
    return all(op != _DIFF_DELETE for op, _ in _differ.diff_main(old, new, False))


def _added_characters(old: str, new: str, at: int, start: int) -> Iterator[tuple[int, int, int]]:
    for op, chunk in _differ.diff_main(old, new, False):
        if op == _DIFF_INSERT:
            yield at, start, len(chunk)
        else:
            at += len(chunk)
        start += len(chunk)


def _sticky_item(sequence: Text | Array[Any], position: int, assoc: Assoc) -> ItemId:
    """The element before (or at) a position, never at the sequence's ends."""
    item = sequence.sticky_index(position, assoc).to_json()["item"]
    return int(item["client"]), int(item["clock"])
