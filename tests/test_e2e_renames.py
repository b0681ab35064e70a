"""A shared file renamed in its folder (issue 13): the share follows the new name, with two
real daemons on loopback (tests/daemons.py). Each machine keeps its own file name: the peer
is unaffected. A file moved to another folder, or deleted, is written back as before.

The daemon decides after a grace (2 s) once the file went; the tests wait for what a user
sees (``status`` naming the new path, the peer's edit in the renamed file), never on time.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemons import (
    SAMPLE,
    Node,
    Pair,
    cell_source,
    edit_cell,
    synced_pair,
    wait_until,
)

pytestmark = pytest.mark.timeout(180)


def share_path(node: Node) -> Path:
    (share,) = node.status()["shares"]
    return Path(share["path"])


def edit_reaches(source: Path, dest: Path, cell: int, line: str) -> None:
    """Add ``line`` to ``cell`` in ``source`` (saved like an editor); wait for it in ``dest``."""
    edit_cell(source, cell, line)
    wait_until(lambda: line in cell_source(dest, cell), what=f"{line!r} in {dest.name}")


def test_mv_is_followed_both_ways_and_across_restarts(tmp_path: Path, notebooks_dir: Path) -> None:
    with synced_pair(tmp_path, notebooks_dir / SAMPLE) as pair:
        old, new = pair.b_file, pair.b_file.with_name("renamed.ipynb")
        # mv, then at once a save under the new name (its content is no longer the one B
        # wrote: only inotify's rename pairing can tell) and a peer's edit (it must not
        # bring the old name back while B decides).
        os.rename(old, new)
        edit_cell(new, 1, "B saved right after the mv")
        edit_cell(pair.a_file, 2, "A edited while B's file was being renamed")
        wait_until(lambda: share_path(pair.b) == new, what="B's share to follow the new name")
        wait_until(lambda: "A edited while" in cell_source(new, 2), what="A's edit in B's file")
        wait_until(lambda: "B saved right" in cell_source(pair.a_file, 1), what="B's save on A")

        edit_reaches(new, pair.a_file, 3, "B edited after the rename")
        edit_reaches(pair.a_file, new, 4, "A edited after the rename")
        wait_until(lambda: new.read_bytes() == pair.a_file.read_bytes(), what="equal files")
        assert not old.exists(), "the old name was brought back"
        # The name is local: A keeps its own. B's invitations now offer B's new name.
        assert [share["name"] for share in pair.b.status()["shares"]] == [new.name]
        assert share_path(pair.a) == pair.a_file
        visible = [p.name for p in pair.a.workdir.iterdir() if not p.name.startswith(".")]
        assert visible == [pair.a_file.name]

        pair.b.stop()
        pair.b.start()
        assert share_path(pair.b) == new
        edit_reaches(pair.a_file, new, 5, "A edited after B restarted")
        edit_reaches(new, pair.a_file, 6, "B edited after its restart")
        assert not old.exists(), "the old name was brought back after a restart"

        # Renamed while the daemon is stopped: found at start by its content.
        pair.b.stop()
        last = new.with_name("renamed-while-stopped.ipynb")
        os.rename(new, last)
        pair.b.start()
        assert share_path(pair.b) == last
        edit_reaches(pair.a_file, last, 7, "A edited after B's rename while stopped")
        edit_reaches(last, pair.a_file, 8, "B edited under the name given while stopped")
        assert not new.exists() and not old.exists()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, notebooks_dir: Path) -> Iterator[Pair]:
    """One pair for the module (sharing and joining is the slow part of every case)."""
    with synced_pair(tmp_path_factory.mktemp("renames"), notebooks_dir / SAMPLE) as pair:
        yield pair


@pytest.fixture
def pair(shared: Pair) -> Pair:
    """The module's pair with A's file where A's share has it now, both files equal."""
    shared.a_file = share_path(shared.a)
    wait_until(lambda: shared.a_file.read_bytes() == shared.b_file.read_bytes(), what="equal")
    return shared


def test_save_as_then_delete_is_followed_by_content(pair: Pair) -> None:
    """An editor's "save as" a new name, then the old file deleted: no rename for inotify
    to pair, but the new file holds exactly what the daemon last wrote."""
    old, saved_as = pair.a_file, pair.a_file.with_name("saved-as.ipynb")
    saved_as.write_bytes(old.read_bytes())
    old.unlink()
    wait_until(lambda: share_path(pair.a) == saved_as, what="A's share to follow the new file")
    edit_reaches(pair.b_file, saved_as, 3, "B edited after A's save-as")
    edit_reaches(saved_as, pair.b_file, 4, "A edited its saved-as file")
    assert not old.exists(), "the old name was brought back"
    assert share_path(pair.b) == pair.b_file


def test_a_move_to_another_folder_is_a_delete(pair: Pair) -> None:
    """The share stays at its path (written back there); the moved copy is a plain file."""
    path = pair.a_file
    moved = path.parent / "elsewhere" / path.name
    moved.parent.mkdir()
    os.rename(path, moved)
    wait_until(path.is_file, what="A's file written back")
    edit_reaches(pair.b_file, path, 5, "B edited after A moved its file away")
    assert share_path(pair.a) == path
    assert "B edited after A moved" not in cell_source(moved, 5)
    shutil.rmtree(moved.parent)


def test_a_delete_beside_an_edited_copy_is_a_delete(pair: Pair) -> None:
    """Deleted, while a copy with other content appears: not a rename (the content differs,
    and inotify saw no rename), so the file is written back and the copy left alone."""
    path = pair.a_file
    copy = path.with_name("my-copy.ipynb")
    shutil.copyfile(path, copy)
    edit_cell(copy, 6, "only in the copy")
    path.unlink()
    wait_until(path.is_file, what="A's file written back")
    edit_reaches(pair.b_file, path, 7, "B edited after A's delete")
    assert share_path(pair.a) == path
    assert "B edited after A's delete" not in cell_source(copy, 7)
    copy.unlink()
