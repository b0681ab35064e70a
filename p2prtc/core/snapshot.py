"""One snapshot of the file (``Version``), and how far a save is from one (its distances).

A version is a text the engine read or wrote, with the doc as it was then; the distances
help pick the version a save started from (core.base_choice). Sans-IO: notebooks and doc
states in, counts out.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import orjson
from pycrdt import Doc

from p2prtc.core.history import CellKey, Fact, cell_facts
from p2prtc.core.ingest import changed_characters, changed_lines
from p2prtc.core.model import doc_to_notebook, keeps_cell_ids
from p2prtc.core.notebook import Notebook
from p2prtc.core.repair import Shown, waits_for_updates
from p2prtc.core.statevector import StateVector, decode_state_vector, encode_state_vector


@dataclass(frozen=True)
class Version:
    """A file text the engine read or wrote, with the doc as it was then."""

    digest: bytes
    notebook: Notebook  # joined form, every cell with the doc's id
    state: bytes  # full doc update at that moment
    state_vector: StateVector
    # False for a save merged against a version that was not ``complete``: the editor's
    # buffer came from a text that lacked what yrs held back.
    from_complete: bool = True
    # ``waits_for_updates`` when its maker knew it already (else worked out from the state).
    known_waiting: bool | None = None

    @classmethod
    def of_doc(
        cls, digest: bytes, notebook: Notebook, doc: Doc[Any], waiting: bool | None = None
    ) -> Version:
        """A version of ``doc`` as it is now; ``waiting``: whether the doc waits for updates
        (``repair.waits_for_updates``), when the caller knows."""
        return cls(digest, notebook, doc.get_update(), state_vector(doc), known_waiting=waiting)

    @classmethod
    def from_state(cls, digest: bytes, state: bytes, notebook: Notebook | None = None) -> Version:
        """A version rebuilt from its doc state; ``notebook`` is the doc's unless given."""
        doc: Doc[Any] = Doc()
        doc.apply_update(state)
        if notebook is None:
            notebook = doc_to_notebook(doc)
        return cls(digest, notebook, state, state_vector(doc))

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
    def waiting(self) -> bool:
        """Did the doc then hold back part of an update that came before one it builds on?"""
        if self.known_waiting is not None:
            return self.known_waiting
        return waits_for_updates(self.state, encode_state_vector(self.state_vector))

    @property
    def complete(self) -> bool:
        """Did the doc hold every update its updates build on? yrs holds back part of an
        update that came before an earlier one it builds on (over another link): a cell a
        peer moved then shows without what was typed into it here, so such a text is no
        proof of what the user saw (``RememberedVersions.latest_complete``)."""
        return self.from_complete and not self.waiting

    @cached_property
    def shown(self) -> Shown:
        """Its cells, and the doc items that held them when asked (to tell a moved cell's
        copy)."""
        cells = [(cell["id"], cell["source"]) for cell in self.notebook["cells"]]
        return Shown(cells, state=self.state)

    def is_current(self, doc: Doc[Any]) -> bool:
        """Does ``doc`` still hold exactly this version?

        Equal state vectors are not enough: a peer's deletions do not advance a state vector,
        and a diff against the version would then land at shifted offsets. Equal encodings
        are proof; an encoding that differs for an equal doc only costs the fork path.
        """
        if self.state_vector != state_vector(doc):
            return False
        return self.state == doc.get_update()

    def distance(self, new: Notebook, by_id: dict[str, str] | None) -> Distance:
        if by_id is not None:
            return id_distance(self.sources_by_id, by_id)
        return edit_distance(self.sources, source_counts(new))


def state_vector(doc: Doc[Any]) -> StateVector:
    return decode_state_vector(doc.get_state())


def cell_keys(nb: Notebook) -> list[CellKey]:
    """Each cell's id and source: what facts are made of."""
    return [(str(cell.get("id")), cell["source"]) for cell in nb["cells"]]


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
