"""Moved and deleted cells through two real daemons on loopback (issue 16).

The concurrency comes from a daemon that is down: B's daemon is stopped, both editors save
(A moves a cell, B types into it or moves it too), and B's daemon starts again: it ingests
B's save, the two daemons sync, and each repairs the merge (core.repair) the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from daemons import (
    SAMPLE,
    Pair,
    edit_cell,
    read_notebook,
    synced_pair,
    wait_until,
    write_like_jupyter,
)
from nbgen import nbformat_problem, render_with_move, upgrade_to_45

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(params=[4, 5], ids=["v4.4-no-ids", "v4.5-ids"])
def pair(request: pytest.FixtureRequest, tmp_path: Path, notebooks_dir: Path) -> Iterator[Pair]:
    notebook = notebooks_dir / SAMPLE
    if request.param == 5:
        notebook = tmp_path / SAMPLE
        notebook.write_text(upgrade_to_45((notebooks_dir / SAMPLE).read_text()))
    with synced_pair(tmp_path / "nodes", notebook) as synced:
        yield synced


def sources(path: Path) -> list[str]:
    return ["".join(cell["source"]) for cell in read_notebook(path)["cells"]]


def settled(pair: Pair, check: Callable[[list[str]], bool]) -> bool:
    """Both files byte-identical and valid (ids once in 4.5), their sources passing
    ``check``."""
    text = pair.a_file.read_text()
    if pair.b_file.read_text() != text or not check(sources(pair.a_file)):
        return False
    assert nbformat_problem(text) is None
    return True


def test_line_typed_into_a_cell_moved_meanwhile_lands_in_it(pair: Pair) -> None:
    moved = sources(pair.a_file)[3]
    pair.b.shut_down()  # gone before either editor saves
    edit_cell(pair.b_file, 3, "TYPED ON B")
    pair.a_file.write_text(render_with_move(pair.a_file.read_text(), 3, 0))
    pair.b.start()

    wait_until(
        lambda: settled(pair, lambda now: "TYPED ON B" in "".join(now)),
        60,
        what="both files with B's line",
    )
    after = sources(pair.a_file)
    assert after[0] == "TYPED ON B\n" + moved
    assert "".join(after).count("TYPED ON B") == 1
    assert moved not in after[1:]


def test_cell_moved_on_both_machines_at_once_is_there_once(pair: Pair) -> None:
    before = sources(pair.a_file)
    moved = before[3]
    pair.b.shut_down()  # gone before either editor saves
    pair.b_file.write_text(render_with_move(pair.b_file.read_text(), 3, len(before) - 1))
    pair.a_file.write_text(render_with_move(pair.a_file.read_text(), 3, 0))
    pair.b.start()

    wait_until(
        lambda: settled(pair, lambda now: now.count(moved) == 1 and len(now) == len(before)),
        60,
        what="both files with the moved cell once",
    )
    after = sources(pair.a_file)
    assert after.index(moved) in (0, len(before) - 1)
    assert sorted(after) == sorted(before)


def test_cell_deleted_while_typed_into_stays_deleted(pair: Pair) -> None:
    before = sources(pair.a_file)
    deleted = before[3]
    pair.b.shut_down()  # gone before either editor saves
    edit_cell(pair.b_file, 3, "TYPED ON B")
    nb = read_notebook(pair.a_file)
    del nb["cells"][3]
    write_like_jupyter(pair.a_file, nb)
    pair.b.start()

    wait_until(
        lambda: settled(pair, lambda now: len(now) == len(before) - 1),
        60,
        what="both files without the deleted cell",
    )
    after = sources(pair.a_file)
    assert "TYPED ON B" not in "".join(after)
    assert deleted not in after
    assert after == before[:3] + before[4:]
