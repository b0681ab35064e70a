"""Property tests: replicas that edit concurrently converge, and no edit is lost or doubled.

Two to five replicas of a small notebook (with cell ids, or nbformat 4.4 without) take random
file-level saves: typing a line into a cell, deleting a typed line, inserting, deleting and
moving cells, replacing outputs. Editors sometimes keep a stale buffer when the daemon writes
a merged file. Updates travel in random causal order (an update is held back until what it
builds on has arrived: see test_pycrdt_applies_out_of_order_updates_wrongly), some twice.
At the end everyone has every update, and then:

- all replicas render the same file, and every cell id appears once;
- every cell's marker (its first line) appears at most once, and exactly once unless someone
  deleted that cell;
- every typed token appears at most once; exactly once unless its cell was deleted or its
  line was deleted. A move is a delete plus an insert of a copy (pycrdt has no Array.move;
  Jupyter's own collaboration does the same): typing concurrent with a move lands in the
  deleted original, and core.repair transplants it into the copy;
- a deleted line stays deleted, unless its cell was moved (a move copies the cell as the
  mover saw it, and a repair transplants what a file showed: a deletion concurrent with a
  move may come back, by design, rather than losing typing);
- a deleted line stays deleted, if the replica's own previous save had it. A line that came
  from a peer since then and is deleted again before anything else changed is ambiguous: the
  file is then what the editor had before the peer's edit, which is also what a stale
  editor saves. The engine keeps the peer's line (a stale save must not erase a peer's edit).
  Likewise when a deletion makes the file exactly a version the daemon wrote before the
  replica's last save (a second editor may hold that version: the save is taken as its
  unchanged save, and the line stays).

The engine picks the version a save started from by the smallest difference. A stale editor
that deletes what a peer already deleted makes its save look closer to the newer version, and
the merge then reverts the peer's other changes the editor never saw (what the peer added
may go, what it deleted may come back); the test accepts that for such coincident stale
deletions only (`World.may_revert`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from convergence import EDITS, MOVES, SeededData, check, check_converged, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text

from p2prtc.core.statevector import StateVector, decode_state_vector

# Derandomized: the same examples every run, so a rare case (see the report) cannot make
# the suite flaky; replica docs still draw random client ids, as in real use.
PROPERTY = settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@PROPERTY
@given(data=st.data())
def test_replicas_converge_without_losing_or_doubling_edits(data: st.DataObject) -> None:
    check(run(data, EDITS))


@settings(PROPERTY, max_examples=40)
@given(data=st.data())
def test_editors_that_rarely_reload_save_from_versions_older_than_those_kept_whole(
    data: st.DataObject,
) -> None:
    """Long runs where editors seldom reload: buffers many daemon writes old, whose
    versions the engine recalls from the replica's log."""
    check(run(data, EDITS, steps=90, reloads=0.15))


@PROPERTY
@given(data=st.data())
def test_replicas_that_move_cells_converge_to_one_valid_file(data: st.DataObject) -> None:
    """Moves repaired (core.repair): every peer ends with the same file, each id once."""
    check_converged(run(data, MOVES))


# Seeded runs that must pass (0-499): about 0.02 s of CPU a run, 500 runs 9.5 s of CPU (29 s on
# the loaded 2-core machine); scripts/soak_moves.py runs 0-999 and beyond (docs/reliability.md).
SEEDS_THAT_PASS = 500


@pytest.mark.parametrize("seed", range(SEEDS_THAT_PASS))
def test_seeded_runs_with_moves_lose_and_double_nothing(seed: int) -> None:
    """The full check on fixed seeds: moves must keep passing them. (The seeds among 0-999
    that failed, 461, 478, 566, 620, 621, 758 and 835, each have their case reduced in
    tests/test_repair.py or tests/test_engine.py.)"""
    check(run(SeededData(seed), MOVES))  # type: ignore[arg-type]


# Seeded runs over SharedFile (real files and sqlite logs, compacting every few updates): a
# run takes about 0.2 s of CPU but 1 s on the loaded machine (the store's syncs): 10 runs.
SEEDS_OVER_FILES = 10


@pytest.mark.parametrize("seed", range(SEEDS_OVER_FILES))
def test_seeded_runs_over_shared_files_lose_and_double_nothing(seed: int, tmp_path: Path) -> None:
    """The same check with each replica the daemon's SharedFile: its file, its update log,
    versions recalled from it, compaction (scripts/soak_moves.py --files soaks more)."""
    check(run(SeededData(seed), MOVES, folder=tmp_path))  # type: ignore[arg-type]


# A seed whose notebook has no cell ids (nbformat 4.4: the engine mints them) and whose
# saves stamp edits.
REPLAYED_SEED = 3


@pytest.mark.parametrize("files", [False, True], ids=["engines", "shared-files"])
def test_a_seed_replays_to_the_same_docs(files: bool, tmp_path: Path) -> None:
    """A failing seed is worth its number only if it replays exactly: client ids, minted
    cell ids and edit stamps all come from the seed (uuid4 and the wall clock made two
    replays of one seed end with different docs)."""

    def replay(folder: Path | None) -> list[tuple[str, StateVector]]:
        world = run(SeededData(REPLAYED_SEED), MOVES, folder=folder)  # type: ignore[arg-type]
        docs = [peer.replica.engine.doc for peer in world.peers]
        # Content and clocks: yrs may encode equal docs in another order within one process.
        return [(doc_content(doc), decode_state_vector(doc.get_state())) for doc in docs]

    folders = [tmp_path / "first", tmp_path / "second"] if files else [None, None]
    for folder in folders:
        if folder is not None:
            folder.mkdir()
    first, second = (replay(folder) for folder in folders)
    assert first == second


def doc_content(doc: Doc[Any]) -> str:
    return json.dumps({name: root.to_py() for name, root in doc.items()}, sort_keys=True)


# --- a pycrdt bug the sync layer must work around ----------------------------------------------


def transaction_update(doc: Doc[Any], change: Callable[[], None]) -> bytes:
    updates: list[bytes] = []
    subscription = doc.observe(lambda event: updates.append(event.update))
    change()
    doc.unobserve(subscription)
    return updates[0]


def test_pycrdt_applies_out_of_order_updates_wrongly() -> None:
    """pycrdt 0.14.13 (yrs) drops an update that arrives before the one it builds on.

    B types "abc", then "def" right after it, then "ghi" elsewhere. C gets the second and
    third updates before the first: "def" never shows up, although C applied every update.
    Re-sending it, or y-sync's step 2, repairs the doc. So updates must be applied in causal
    order (or followed by a sync step). When this test fails, pycrdt has fixed the bug.
    """
    a: Doc[Any] = Doc()
    text_a = a.get("t", type=Text)
    text_a += "0123456789"
    b: Doc[Any] = Doc()
    b.apply_update(a.get_update())
    text_b = b.get("t", type=Text)
    first = transaction_update(b, lambda: text_b.insert(2, "abc"))
    second = transaction_update(b, lambda: text_b.insert(5, "def"))
    third = transaction_update(b, lambda: text_b.insert(12, "ghi"))
    c: Doc[Any] = Doc()
    c.apply_update(a.get_update())

    for update in (second, third, first):
        c.apply_update(update)

    assert str(c.get("t", type=Text)) == "01abc2345ghi6789"  # "def" is missing
    c.apply_update(b.get_update(c.get_state()))
    assert str(c.get("t", type=Text)) == str(text_b) == "01abcdef2345ghi6789"
