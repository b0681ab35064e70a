"""VersionHistory: matching a save to older versions by their facts (pure, no I/O)."""

from __future__ import annotations

from p2prtc.core.history import CellKey, VersionHistory, cell_facts


def cells(*sources: str) -> list[CellKey]:
    return [(f"id{index}", source) for index, source in enumerate(sources)]


def digest(number: int) -> bytes:
    return number.to_bytes(16, "big")


def history_of(
    versions: list[list[CellKey]], limit: int = 100, *, with_ids: bool = True
) -> VersionHistory:
    history = VersionHistory(limit)
    for number, version in enumerate(versions):
        history.add(digest(number), facts(version, with_ids=with_ids), with_ids=with_ids)
    return history


# Each version adds a line to one cell, as a peer's edit written by the daemon would.
VERSIONS = [
    cells("a", "b", "c"),
    cells("a\nA1", "b", "c"),
    cells("a\nA1", "b\nB1", "c"),
    cells("a\nA1", "b\nB1", "c\nC1"),
    cells("a\nA1\nA2", "b\nB1", "c\nC1"),
]


def facts(version: list[CellKey], *, with_ids: bool = True) -> frozenset[tuple[str, str, int]]:
    return cell_facts(version, with_ids=with_ids)


def test_a_save_is_matched_to_the_version_it_started_from() -> None:
    history = history_of(VERSIONS)
    # The user typed into the third cell of version 2, which still had "c".
    save = cells("a\nA1", "b\nB1", "c\nmine")

    found = history.candidates(facts(save), with_ids=True)

    assert digest(2) in found  # the engine then picks among these by their whole content
    assert digest(0) not in found  # had neither of the save's two older cells


def test_candidates_are_few_and_oldest_first() -> None:
    history = history_of(VERSIONS)
    found = history.candidates(facts(VERSIONS[1]), with_ids=True)

    assert digest(1) in found
    assert found == sorted(found)
    assert len(found) <= 3


def test_files_without_ids_are_matched_by_source() -> None:
    history = history_of(VERSIONS, with_ids=False)
    save = cells("a", "b", "c\nmine")
    found = history.candidates(facts(save, with_ids=False), with_ids=False)

    assert digest(0) in found
    assert history.candidates(facts(save), with_ids=True) == []  # one kind of facts only


def test_facts_no_version_had_match_nothing() -> None:
    history = history_of(VERSIONS)
    unrelated = frozenset({("cell", "other\0text", 0)})

    assert history.candidates(unrelated, with_ids=True) == []
    assert not history.knows_any(unrelated, with_ids=True)


def test_forget_through_drops_that_version_and_older() -> None:
    history = history_of(VERSIONS)
    history.forget_through(digest(2))

    assert digest(2) not in history and digest(1) not in history
    assert digest(3) in history
    # Version 1's own fact (cell 0 at "a\nA1" with cell 1 still "b") is gone with it.
    assert history.candidates(facts(VERSIONS[1]), with_ids=True)[0] >= digest(3)


def test_clear_forgets_everything_but_keeps_adding() -> None:
    history = history_of(VERSIONS)
    history.clear()

    assert len(history) == 0
    assert not history.knows_any(facts(VERSIONS[-1]), with_ids=True)
    history.add(digest(9), facts(VERSIONS[0]), with_ids=True)
    assert history.candidates(facts(VERSIONS[0]), with_ids=True) == [digest(9)]


def test_the_oldest_versions_go_beyond_the_limit() -> None:
    many = [cells(f"line {number}") for number in range(300)]
    history = history_of(many, limit=50)

    assert len(history) <= 50 + 64
    assert digest(0) not in history
    assert digest(299) in history
    assert history.candidates(frozenset({("cell", "id0\0line 0", 0)}), with_ids=True) == []
