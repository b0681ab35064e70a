"""Which version a save started from (its base): pure functions over the remembered versions.

A save is diffed against its base, so the choice decides what the merge keeps: a base too
new re-applies a peer's change (a doubled line, a re-created cell), a base too old reverts
one. The evidence is the save's facts (core.history) against each version's; then the size
of the edit (core.snapshot's distances).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from p2prtc.core.history import Fact, VersionHistory, cell_facts, cells_in, is_order
from p2prtc.core.ingest import changed_lines
from p2prtc.core.notebook import Notebook
from p2prtc.core.remembered import RememberedVersions
from p2prtc.core.snapshot import (
    MAX_PAIRINGS,
    Distance,
    Version,
    cell_keys,
    counter_distance,
    part_counts,
    sources_by_id,
)

logger = logging.getLogger(__name__)

# Rebuilds the doc state of an older version, by its digest (from the caller's update log);
# None when it cannot.
Recall = Callable[[bytes], bytes | None]


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


def choose_base(save: Save, remembered: RememberedVersions, recall: Recall | None) -> Version:
    """The version ``save`` started from: a remembered one, or one ``recall`` rebuilt."""
    recalled = recalled_versions(save, remembered, recall)
    predating = len(recalled) + remembered.predating_last_save
    base = closest_version(save, [*recalled, *remembered.whole], predating)
    if base is None:
        raise RuntimeError("ingest before the engine knows any version of the file")
    return base


def recalled_versions(
    save: Save, remembered: RememberedVersions, recall: Recall | None
) -> list[Version]:
    """The older versions a save may have started from, oldest first (usually none).

    Only asked for when the save has facts that no version kept whole has and an older
    version had: a cell as it was before a peer changed or deleted it, an order since
    changed. A fact no version had is just the user's edit.
    """
    history = remembered.history
    if recall is None or not history:
        return []
    with_ids = save.by_id is not None
    kept = remembered.kept_facts(with_ids=with_ids)
    unknown = save.facts - kept
    if not history.knows_any(unknown, with_ids=with_ids) and not edits_older_cell(
        save, kept, history, with_ids=with_ids
    ):
        return []
    recalled = []
    for digest in history.candidates(save.facts, with_ids=with_ids):
        state = recall(digest)
        if state is not None:
            recalled.append(Version.from_state(digest, state))
    logger.info("a save older than the kept versions: %d older ones recalled", len(recalled))
    return recalled


def edits_older_cell(
    save: Save, kept: frozenset[Fact], history: VersionHistory, *, with_ids: bool
) -> bool:
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
    older = history.cells(with_ids=with_ids) - kept_cells
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


def closest_version(save: Save, versions: list[Version], predating: int) -> Version | None:
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
