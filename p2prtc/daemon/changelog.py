"""The change log of a share: entries written with each update, and `p2prtc log`'s answer.

Each stored update gets one entry per member whose edits it carries (from the cell stamps
of core.edits: the author, even when a third member relayed it), with the cells it changed
and any concurrent edits the merge revealed. An update without stamps (typed in a Jupyter
room, or from a p2prtc that does not stamp) is logged under the member it came from, with
no cell detail. Cells are logged by id, with where they were and their first line then.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from pycrdt import Doc, Map

from p2prtc.adapters.store import MAX_LOG_ENTRIES, LogEntry, UpdateStore
from p2prtc.core.edits import Concurrent, Stamp
from p2prtc.core.model import cells_of

# What made an entry's update.
SAVE = "save"  # a save of the file on this machine
PEER = "peer"  # an update from a peer
JUPYTER = "jupyter"  # typed in a Jupyter room attached to this daemon
SHARE = "share"  # the sharer's first load of the file
JOIN = "join"  # a joiner's first state, from the member it came from (its past: no cells)

# A member id -> what to show for it (its name and short id: daemon/names.py).
MemberLabel = Callable[[str], str]
# Concurrent edits older than this are no longer listed by `status` (`log` keeps them).
CONCURRENT_SHOWN_S = 24 * 3600.0
CONCURRENT_SHOWN = 5
DEFAULT_ENTRIES = 20  # `p2prtc log` without -n
_FIRST_LINE_CHARS = 60
# Entries without cell detail of one member and kind within this long are one entry.
BURST_S = 60.0
_BARE = json.dumps({"cells": [], "concurrent": []})


def member_id(member: str) -> str:
    """The default label: the id itself."""
    return member


def entries(
    kind: str,
    member: str,
    stamps: list[Stamp],
    concurrent: list[Concurrent],
    doc: Doc[Any],
    likely_order: Sequence[str] = (),
) -> list[LogEntry]:
    """The log entries of one update (already applied to ``doc``): one per author of its
    stamps (``member`` when it has none), the cells where they are in ``doc`` with their
    first line; concurrent edits go with the first entry. Their seq is the store's to set.
    ``likely_order``: the cell ids as the doc probably holds them (see CellLocator)."""
    by_member: dict[str, list[Stamp]] = {}
    for stamp in stamps:
        by_member.setdefault(stamp.member, []).append(stamp)
    if not by_member:
        by_member[member] = []
    wanted = {stamp.cell_id for stamp in stamps} | {item.cell_id for item in concurrent}
    locator = CellLocator(doc, wanted, likely_order) if wanted else None
    logged = []
    for index, (author, own) in enumerate(by_member.items()):
        found = concurrent if index == 0 else []
        detail = {
            "cells": [{**_where(locator, s.cell_id), "parts": list(s.parts)} for s in own],
            "concurrent": [
                {**_where(locator, c.cell_id), "members": list(c.members)} for c in found
            ],
        }
        at = min((stamp.at for stamp in own), default=time.time())
        # A peer's stamps drained with a save here (an update that arrived in between).
        entry_kind = PEER if kind == SAVE and author != member else kind
        logged.append(LogEntry(0, at, author, entry_kind, json.dumps(detail), bool(found)))
    return logged


class Bursts:
    """Drops an entry without cell detail that repeats the previous one (same member, same
    kind) within ``BURST_S``: typing in a JupyterLab room sends an update per keystroke, and
    an entry each would push every other change out of the log."""

    def __init__(self) -> None:
        self._last: tuple[str, str, float] | None = None  # member, kind, at of a bare entry

    def kept(self, logged: list[LogEntry]) -> list[LogEntry]:
        kept = []
        for entry in logged:
            if entry.detail != _BARE:
                self._last = None
                kept.append(entry)
                continue
            last = self._last
            if (
                last is None
                or last[:2] != (entry.member, entry.kind)
                or entry.at - last[2] > BURST_S
            ):
                self._last = (entry.member, entry.kind, entry.at)
                kept.append(entry)
        return kept


class CellLocator:
    """Where the ``wanted`` cells are (index, first line), by id, as the doc holds them.

    Found on the path of every save to its peers: one read transaction for all the cells
    (not one per read). Each cell is first looked for where ``likely_order`` (the ids in the
    order the file last showed them) puts it, one read, as a keystroke moves no cell; the
    others are searched for, stopping once all are found.
    """

    def __init__(self, doc: Doc[Any], wanted: set[str], likely_order: Sequence[str] = ()) -> None:
        self._where: dict[str, tuple[int, Map[Any]]] = {}
        likely_index = {cell_id: index for index, cell_id in enumerate(likely_order)}
        with doc.transaction():
            cells = cells_of(doc)
            count = len(cells)
            for cell_id in wanted:
                index = likely_index.get(cell_id, count)
                cell = cells[index] if index < count else None
                if cell is not None and cell.get("id") == cell_id:
                    self._where[cell_id] = (index, cell)
            missing = wanted - self._where.keys()
            for index, cell in enumerate(cells if missing else ()):
                cell_id = cell.get("id")
                if isinstance(cell_id, str) and cell_id in missing:
                    self._where[cell_id] = (index, cell)
                    missing.discard(cell_id)
                    if not missing:
                        break

    def describe(self, cell_id: str) -> dict[str, Any]:
        """The cell's id, index and first line; index and line None for a deleted cell."""
        if cell_id not in self._where:
            return {"id": cell_id, "index": None, "first_line": None}
        index, cell = self._where[cell_id]
        return {"id": cell_id, "index": index, "first_line": _first_line(str(cell.get("source")))}


def _where(locator: CellLocator | None, cell_id: str) -> dict[str, Any]:
    assert locator is not None  # made whenever there are cells to locate
    return locator.describe(cell_id)


def _first_line(source: str) -> str:
    line = next((line for line in source.splitlines() if line.strip()), "")
    return line if len(line) <= _FIRST_LINE_CHARS else line[: _FIRST_LINE_CHARS - 1] + "…"


def log_answer(store: UpdateStore, limit: int, label: MemberLabel = member_id) -> dict[str, Any]:
    """``p2prtc log``'s entries, newest first (in the order this daemon learnt of them)."""
    return {
        "entries": [_entry(entry, label) for entry in store.log(limit)],
        "max_entries": MAX_LOG_ENTRIES,
    }


def recent_concurrent(
    store: UpdateStore, now: float, label: MemberLabel = member_id
) -> list[dict[str, Any]]:
    """The concurrent edits `status` shows: the last few, of the last day."""
    return [
        item
        for entry in store.log(CONCURRENT_SHOWN, concurrent_only=True)
        if now - entry.at <= CONCURRENT_SHOWN_S
        for item in _entry(entry, label)["concurrent"]
    ]


def _entry(entry: LogEntry, label: MemberLabel) -> dict[str, Any]:
    detail = json.loads(entry.detail)
    return {
        "seq": entry.seq,
        "at": entry.at,
        "member": entry.member,
        "member_label": label(entry.member),
        "kind": entry.kind,
        "cells": detail["cells"],
        "concurrent": [
            {
                **item,
                "at": entry.at,
                "member_labels": [label(member) for member in item["members"]],
            }
            for item in detail["concurrent"]
        ],
    }
