"""The file's older versions, as facts: for saves of a buffer older than the versions kept whole.

The engine keeps its last few versions whole (notebook and doc state), which covers editors
that reload. An editor may instead keep a buffer open through many daemon writes (JupyterLab
asks "file changed on disk" and the user picks "overwrite" minutes later). Keeping every
version whole would cost a doc state each; here an older version costs only what changed
from the one before it: each *fact* (a cell's id, its source, which cell follows which) is
remembered with the runs of consecutive versions that had it. A save is matched to the
versions that had most of its facts; the caller then rebuilds those from its update log.

Sans-IO: facts in, digests out.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

logger = logging.getLogger(__name__)

Fact = tuple[str, str, int]
CellKey = tuple[str, str]  # a cell's id and source

# Older versions remembered as facts: at one daemon write per peer's save, minutes of
# several peers' work.
MAX_HISTORY = 512
# Forgetting the oldest scans every remembered fact: done in batches of this many versions.
_FORGET_BATCH = 64
# Versions a save may be matched to and rebuilt, best first: more only on ties.
MAX_CANDIDATES = 3


def cell_facts(cells: Sequence[CellKey], *, with_ids: bool) -> frozenset[Fact]:
    """What a notebook's cells are, and in which order, as comparable facts.

    With ids: each cell's id, its id with its source, and which id follows which. Without
    ids, sources stand for ids.
    """
    if with_ids:
        keys = [cell_id for cell_id, _ in cells]
        facts = [("id", key) for key in keys]
        facts += [("cell", f"{cell_id}\0{source}") for cell_id, source in cells]
    else:
        keys = [source for _, source in cells]
        facts = [("source", key) for key in keys]
    # The ends count too: the order of the other cells still speaks when one is edited.
    ends = ["\0start", *keys, "\0end"]
    facts += [("next", f"{first}\0{second}") for first, second in pairwise(ends)]
    return frozenset(_numbered(facts))


def cells_in(facts: frozenset[Fact]) -> set[CellKey]:
    """The cells (id, source) these facts tell of; without ids, the id is empty."""
    cells = set()
    for kind, value, _ in facts:
        if kind == "cell":
            cell_id, _, source = value.partition("\0")
            cells.add((cell_id, source))
        elif kind == "source":
            cells.add(("", value))
    return cells


def is_order(fact: Fact) -> bool:
    """Is the fact which cell follows which (not what a cell is)?"""
    return fact[0] == "next"


def _numbered(facts: list[tuple[str, str]]) -> Iterator[Fact]:
    """Each fact with its occurrence number, so that repeated ones stay distinct."""
    repeated = {fact for fact, count in Counter(facts).items() if count > 1}
    seen: Counter[tuple[str, str]] = Counter()
    for fact in facts:
        if fact in repeated:  # rare (empty cells, say): most facts skip the counting
            yield *fact, seen[fact]
            seen[fact] += 1
        else:
            yield *fact, 0


NONE: frozenset[Fact] = frozenset()


@dataclass
class _Runs:
    """For each fact, the runs [start, stop) of consecutive version numbers that had it."""

    current: dict[Fact, int] = field(default_factory=dict)  # facts of the newest: run start
    closed: dict[Fact, list[tuple[int, int]]] = field(default_factory=dict)
    newest: frozenset[Fact] = frozenset()

    def add(self, number: int, facts: frozenset[Fact]) -> None:
        for fact in facts - self.newest:
            self.current[fact] = number
        for fact in self.newest - facts:
            self.closed.setdefault(fact, []).append((self.current.pop(fact), number))
        self.newest = facts

    def runs(self, fact: Fact, first: int, end: int) -> Iterator[tuple[int, int]]:
        """The fact's runs within [first, end)."""
        start = self.current.get(fact)
        ongoing = [] if start is None else [(start, end)]
        for run_start, run_stop in [*self.closed.get(fact, []), *ongoing]:
            if run_stop > first:
                yield max(run_start, first), run_stop

    def prune(self, first: int) -> None:
        """Forget runs that ended before version ``first``."""
        for fact in list(self.closed):
            kept = [run for run in self.closed[fact] if run[1] > first]
            if kept:
                self.closed[fact] = kept
            else:
                del self.closed[fact]


class VersionHistory:
    """Versions no longer kept whole, oldest first, each known by its digest and its facts."""

    def __init__(self, limit: int = MAX_HISTORY) -> None:
        self._limit = limit
        self._digests: dict[int, bytes] = {}  # version number -> digest, oldest first
        self._numbers: dict[bytes, int] = {}  # digest -> newest version number with it
        self._next = 0
        self._first = 0  # the oldest version number still remembered
        self._runs = {False: _Runs(), True: _Runs()}  # by "facts with ids"

    def __len__(self) -> int:
        return len(self._digests)

    def __contains__(self, digest: bytes) -> bool:
        return self._numbers.get(digest, -1) >= self._first

    def add(self, digest: bytes, facts: frozenset[Fact], *, with_ids: bool) -> None:
        """Remember a version that is newer than every version remembered so far.

        Its ``cell_facts`` are of one kind: with ids for a file that has them (nbformat >=
        4.5), the kind its saves will be matched by.
        """
        number = self._next
        self._next += 1
        self._digests[number] = digest
        self._numbers[digest] = number
        for kind, runs in self._runs.items():
            runs.add(number, facts if kind == with_ids else NONE)
        if len(self._digests) > self._limit + _FORGET_BATCH:
            self._forget_before(number - self._limit + 1)

    def clear(self) -> None:
        """A save came from a newer version: none of these can be a save's start any more."""
        self._forget_before(self._next)

    def forget_through(self, digest: bytes) -> None:
        """Forget the newest version with this digest and everything older."""
        if digest in self:
            self._forget_before(self._numbers[digest] + 1)

    def candidates(self, facts: frozenset[Fact], *, with_ids: bool) -> list[bytes]:
        """The digests of the few versions that had most of these facts (ties: the newest),
        oldest first. Empty when no remembered version had any of them.
        """
        runs = self._runs[with_ids]
        coverage: Counter[int] = Counter()
        for fact in facts:
            for start, stop in runs.runs(fact, self._first, self._next):
                coverage[start] += 1
                coverage[stop] -= 1
        best: list[tuple[int, int]] = []  # (facts had, version number)
        held = 0
        for number in range(self._first, self._next):
            held += coverage[number]
            if held > 0:
                best.append((held, number))
        best.sort(reverse=True)
        return [self._digests[number] for number in sorted(n for _, n in best[:MAX_CANDIDATES])]

    def cells(self, *, with_ids: bool) -> set[CellKey]:
        """Every cell (id, source) a remembered version had (see ``cells_in``)."""
        runs = self._runs[with_ids]
        return cells_in(frozenset(runs.current.keys() | runs.closed.keys()))

    def knows_any(self, facts: frozenset[Fact], *, with_ids: bool) -> bool:
        """Did some remembered version have one of these facts?"""
        runs = self._runs[with_ids]
        return any(any(runs.runs(fact, self._first, self._next)) for fact in facts)

    def _forget_before(self, first: int) -> None:
        if first <= self._first:
            return
        for number in range(self._first, min(first, self._next)):
            self._digests.pop(number, None)
        self._first = first
        self._numbers = {digest: n for digest, n in self._numbers.items() if n >= first}
        for runs in self._runs.values():
            runs.prune(first)
        logger.debug("version history now holds %d versions", len(self._digests))
