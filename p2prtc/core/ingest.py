"""Turn a saved file into the smallest edit of the doc.

``apply_notebook_diff`` compares two notebooks, the *base* (what the doc held when the editor
loaded the file) and the *new* save, and applies only the difference to a doc that holds the
base: cells matched by id (or by content alignment when the file has no ids), deleted,
inserted and moved cells, character-level edits of sources and stream outputs, and per-key
edits of metadata. Nothing that did not change is touched, and no Text is ever cleared and
refilled: that is what duplicates text when two people edit at once.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from diff_match_patch import diff_match_patch
from pycrdt import Array, Doc, Map, Text

from p2prtc.core.model import (
    cells_of,
    make_cell,
    make_output,
    meta_of,
    new_cell_id,
    shared_to_py,
)
from p2prtc.core.notebook import Cell, Notebook
from p2prtc.core.repair import ItemId, cell_item, record_move

_DIFF_TIMEOUT_S = 0.5
_differ = diff_match_patch()
_differ.Diff_Timeout = _DIFF_TIMEOUT_S
_DIFF_DELETE, _DIFF_EQUAL = -1, 0


def edit_text(text: Text, old: str, new: str) -> None:
    """Apply ``old -> new`` to ``text`` (which holds ``old``) as character inserts/deletes."""
    if old == new:
        return
    offset = 0  # pycrdt indexes Text in UTF-8 bytes
    for op, chunk in line_aligned_diff(old, new):
        size = len(chunk.encode())
        if op == _DIFF_EQUAL:
            offset += size
        elif op == _DIFF_DELETE:
            del text[offset : offset + size]
        else:
            text.insert(offset, chunk)
            offset += size


def line_aligned_diff(old: str, new: str) -> list[tuple[int, str]]:
    """A character diff whose edits are slid to line (or word) boundaries where they can be.

    A line typed above an equal-looking one has several equally short diffs: "a\n<t1>" ->
    "a\n<t2>\n<t1>" may come out as inserting "2>\n<t1" inside the old line. Merged with a
    peer's concurrent deletion of that old line, such an edit leaves garbage ("a2>\n<t1")
    instead of the new line. The common prefix and suffix take part, so an edit can slide
    into them.
    """
    prefix, suffix = _common_affixes(old, new)
    diffs: list[tuple[int, str]] = [
        (_DIFF_EQUAL, old[:prefix]),
        *_differ.diff_main(old[prefix : len(old) - suffix], new[prefix : len(new) - suffix], False),
        (_DIFF_EQUAL, old[len(old) - suffix :]),
    ]
    _differ.diff_cleanupSemanticLossless(diffs)
    return diffs


def changed_characters(old: str, new: str) -> int:
    """How many characters a character diff inserts plus deletes."""
    prefix, suffix = _common_affixes(old, new)
    diffs = _differ.diff_main(old[prefix : len(old) - suffix], new[prefix : len(new) - suffix])
    return sum(len(chunk) for op, chunk in diffs if op != _DIFF_EQUAL)


def changed_lines(old: str, new: str) -> int:
    """How many lines a line diff inserts plus deletes."""
    # Both end in a newline, so that a line added after a last line that has none is one
    # inserted line, not a changed last line too.
    old_lines, new_lines, _ = _differ.diff_linesToChars(old + "\n", new + "\n")
    diffs = _differ.diff_main(old_lines, new_lines, False)
    return sum(len(chunk) for op, chunk in diffs if op != _DIFF_EQUAL)


def _common_affixes(old: str, new: str) -> tuple[int, int]:
    """Lengths of the common prefix and suffix, cheap before the real diff on big texts."""
    limit = min(len(old), len(new))
    prefix = 0
    step = 1024
    while prefix < limit:
        end = min(prefix + step, limit)
        if old[prefix:end] == new[prefix:end]:
            prefix = end
            continue
        while old[prefix] == new[prefix]:
            prefix += 1
        break
    suffix = 0
    while suffix < limit - prefix and old[len(old) - 1 - suffix] == new[len(new) - 1 - suffix]:
        suffix += 1
    return prefix, suffix


def edit_map(ymap: Map[Any], old: dict[str, Any], new: dict[str, Any]) -> None:
    """Set changed keys and delete removed ones; equal keys stay untouched."""
    for key in old.keys() - new.keys():
        del ymap[key]
    for key, value in new.items():
        if key not in old or old[key] != value:
            ymap[key] = value


@dataclass(frozen=True)
class CellMatch:
    """Which base cell (by id) each new cell continues; None for a new cell."""

    ids: list[str]
    continued: list[bool]


def match_cells(base: Sequence[Cell], new: Sequence[Cell]) -> CellMatch:
    """Give every new cell an id: the base cell it continues, or a fresh one."""
    if new and all(isinstance(cell.get("id"), str) and cell["id"] for cell in new):
        return _match_by_id(base, new)
    return _match_by_alignment(base, new)


def _match_by_id(base: Sequence[Cell], new: Sequence[Cell]) -> CellMatch:
    base_ids = {cell["id"] for cell in base}
    seen: set[str] = set()
    ids, continued = [], []
    for cell in new:
        cell_id = cell["id"]
        duplicate = cell_id in seen
        seen.add(cell_id)
        # A pasted copy of a cell keeps its id in some editors: the copy is a new cell.
        ids.append(new_cell_id() if duplicate else cell_id)
        continued.append(cell_id in base_ids and not duplicate)
    return CellMatch(ids, continued)


def _fingerprint(cell: Cell) -> tuple[str, str]:
    return cell["cell_type"], cell["source"]


def _match_by_alignment(base: Sequence[Cell], new: Sequence[Cell]) -> CellMatch:
    """Files without ids: equal cells by sequence alignment, then equal cells elsewhere
    (moved), then changed ones paired in place."""
    paired_ids: list[str | None] = [None] * len(new)
    continued = [False] * len(new)
    matcher = difflib.SequenceMatcher(
        a=[_fingerprint(c) for c in base], b=[_fingerprint(c) for c in new], autojunk=False
    )
    opcodes = matcher.get_opcodes()
    paired: set[int] = set()  # base indexes

    def pair(base_index: int, new_index: int) -> None:
        paired_ids[new_index] = base[base_index]["id"]
        continued[new_index] = True
        paired.add(base_index)

    for tag, b1, b2, n1, n2 in opcodes:
        if tag == "equal":
            for base_index, new_index in zip(range(b1, b2), range(n1, n2), strict=True):
                pair(base_index, new_index)
    _match_moved(base, new, paired, continued, pair)
    for tag, b1, b2, n1, n2 in opcodes:
        if tag == "replace":  # an edited cell: pair by position, while the types agree
            for base_index, new_index in zip(range(b1, b2), range(n1, n2), strict=False):
                free = base_index not in paired and not continued[new_index]
                if free and base[base_index]["cell_type"] == new[new_index]["cell_type"]:
                    pair(base_index, new_index)
    # Fresh ids for the new cells only (a uuid4 each: most saves change one cell of many).
    ids = [cell_id if cell_id is not None else new_cell_id() for cell_id in paired_ids]
    return CellMatch(ids, continued)


def _match_moved(
    base: Sequence[Cell],
    new: Sequence[Cell],
    paired: set[int],
    continued: list[bool],
    pair: Callable[[int, int], None],
) -> None:
    """A new cell equal to a base cell the alignment left unmatched is that cell, moved.

    Taken as a deletion plus a new cell, a move would lose what a peer types into the cell
    meanwhile; as a move, the doc keeps the cell's identity (see core.repair).
    """
    unmatched: dict[tuple[str, str], list[int]] = {}
    for index, cell in enumerate(base):
        if index not in paired:
            unmatched.setdefault(_fingerprint(cell), []).append(index)
    for index, cell in enumerate(new):
        candidates = unmatched.get(_fingerprint(cell))
        if not continued[index] and candidates:
            pair(candidates.pop(0), index)


def apply_notebook_diff(doc: Doc[Any], base: Notebook, new: Notebook) -> Notebook:
    """Edit ``doc`` (which holds ``base``) into ``new``; returns ``new`` with every cell's id.

    ``base`` cells all carry ids (the doc's); ``new`` is the parsed file.
    """
    base = {**base, "cells": _unique_ids(base["cells"])}
    match = match_cells(base["cells"], new["cells"])
    new_cells = [
        {**cell, "id": cell_id} for cell, cell_id in zip(new["cells"], match.ids, strict=True)
    ]
    seen = doc.get_state()  # what the editor had: a moved cell's copy is made from it
    with doc.transaction(origin="ingest"):
        _edit_meta(doc, base, new)
        _edit_cells(doc, base["cells"], new_cells, match, seen)
    return {**new, "cells": new_cells}


def _unique_ids(cells: list[Cell]) -> list[Cell]:
    """The cells, a repeated id replaced by a key no file cell can have.

    Two peers moving one cell at once leave two copies with one id in the doc. The diff
    must still address each copy at its own position: a file cell continues the first one,
    and the other copies are deleted unless the file's alignment keeps them.
    """
    seen: set[str] = set()
    unique = []
    for index, cell in enumerate(cells):
        if cell["id"] in seen:
            cell = {**cell, "id": f"{cell['id']}\0{index}"}
        seen.add(cell["id"])
        unique.append(cell)
    return unique


def _edit_meta(doc: Doc[Any], base: Notebook, new: Notebook) -> None:
    meta = meta_of(doc)
    for key in ("nbformat", "nbformat_minor"):
        if base.get(key) != new[key]:
            meta[key] = new[key]
    if base.get("metadata") != new["metadata"]:
        ymetadata = meta.get("metadata")
        if isinstance(ymetadata, Map):
            edit_map(ymetadata, base.get("metadata", {}), new["metadata"])
        else:
            meta["metadata"] = Map(dict(new["metadata"]))


def _edit_cells(
    doc: Doc[Any], base: list[Cell], new: list[Cell], match: CellMatch, seen: bytes
) -> None:
    ycells = cells_of(doc)
    order = [cell["id"] for cell in base]
    kept = {cell_id for cell_id, cont in zip(match.ids, match.continued, strict=True) if cont}
    # Deletions first, from the end so indices stay valid.
    for index in range(len(order) - 1, -1, -1):
        if order[index] not in kept:
            del ycells[index]
            del order[index]
    base_by_id = {cell["id"]: cell for cell in base}
    for ycell_index, new_index, made_from in _place_cells(ycells, order, new, match):
        if made_from is not None:
            record_move(doc, ycell_index, seen, made_from)
        cell = new[new_index]
        old = base_by_id[cell["id"]]
        if old != cell:
            _edit_cell(ycells[ycell_index], old, cell)


def _place_cells(
    ycells: Array[Map[Any]], order: list[str], new: list[Cell], match: CellMatch
) -> Iterator[tuple[int, int, ItemId | None]]:
    """Insert new cells and move reordered ones; yields (doc index, new index, the Map item
    a moved cell's copy was made from) of kept cells.

    Cells on the longest common subsequence of the old and new order stay where they are;
    only the others move, each right after the cell that precedes it in the new order.
    """
    target = [cell["id"] for cell in new]
    present = set(order)
    staying = _longest_common_subsequence(order, [i for i in target if i in present])
    cursor = -1  # doc index of the last cell placed
    for new_index, cell_id in enumerate(target):
        slot = cursor + 1
        made_from = None
        if cell_id in staying:
            cursor = order.index(cell_id, slot)
        elif cell_id in present:
            made_from = cell_item(ycells, order.index(cell_id))
            cursor = _move(ycells, order, cell_id, slot)
        else:
            ycells.insert(slot, make_cell(new[new_index]))
            order.insert(slot, cell_id)
            cursor = slot
        if match.continued[new_index]:
            yield cursor, new_index, made_from


def _move(ycells: Array[Map[Any]], order: list[str], cell_id: str, slot: int) -> int:
    """Move a cell to ``slot``. pycrdt has no Array.move: delete, then insert it as it was."""
    source = order.index(cell_id)
    snapshot = shared_to_py(ycells[source])
    del ycells[source]
    order.pop(source)
    if source < slot:
        slot -= 1
    ycells.insert(slot, make_cell(snapshot))
    order.insert(slot, cell_id)
    return slot


def _longest_common_subsequence(a: list[str], b: list[str]) -> set[str]:
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    return {a[block.a + k] for block in matcher.get_matching_blocks() for k in range(block.size)}


def _edit_cell(ycell: Map[Any], old: Cell, new: Cell) -> None:
    source = ycell["source"]
    assert isinstance(source, Text)
    edit_text(source, old["source"], new["source"])
    metadata = ycell.get("metadata")
    if isinstance(metadata, Map):
        edit_map(metadata, old.get("metadata", {}), new.get("metadata", {}))
    if new["cell_type"] == "code" and old["cell_type"] == "code":
        _edit_outputs(ycell, old.get("outputs", []), new.get("outputs", []))
    elif new["cell_type"] == "code":
        ycell["outputs"] = Array([make_output(output) for output in new.get("outputs", [])])
    elif "outputs" in old:
        del ycell["outputs"]
    plain_old = {k: v for k, v in old.items() if k not in ("source", "metadata", "outputs")}
    plain_new = {k: v for k, v in new.items() if k not in ("source", "metadata", "outputs")}
    edit_map(ycell, plain_old, plain_new)


def _edit_outputs(ycell: Map[Any], old: list[dict[str, Any]], new: list[dict[str, Any]]) -> None:
    if old == new:
        return
    youtputs = ycell.get("outputs")
    if not isinstance(youtputs, Array):
        ycell["outputs"] = Array([make_output(output) for output in new])
        return
    for index in range(len(old) - 1, len(new) - 1, -1):
        del youtputs[index]
    for index, output in enumerate(new):
        if index >= len(old):
            youtputs.append(make_output(output))
        elif old[index] != output:
            _edit_output(youtputs, index, old[index], output)


def _edit_output(
    youtputs: Array[Map[Any]], index: int, old: dict[str, Any], new: dict[str, Any]
) -> None:
    youtput = youtputs[index]
    same_stream = (
        old.get("output_type") == new.get("output_type") == "stream"
        and old.get("name") == new.get("name")
        and isinstance(youtput.get("text"), Text)
    )
    if not same_stream:
        del youtputs[index]
        youtputs.insert(index, make_output(new))
        return
    text = youtput["text"]
    assert isinstance(text, Text)
    edit_text(text, old.get("text", ""), new.get("text", ""))
    edit_map(
        youtput,
        {k: v for k, v in old.items() if k != "text"},
        {k: v for k, v in new.items() if k != "text"},
    )
