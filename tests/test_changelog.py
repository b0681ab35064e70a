"""The change log of a shared file (daemon.changelog): saves here and peers' updates, by
author, with the cells they changed, and concurrent edits, across a restart. No network:
peers' updates are made by engines of their own and delivered as the sync session does."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from daemons import SAMPLE, copy_notebook
from nbgen import THIS_DAEMON, peer_update, render_with_line

from p2prtc.adapters.store import UpdateStore
from p2prtc.core.edits import Author
from p2prtc.core.engine import NotebookEngine
from p2prtc.daemon import changelog
from p2prtc.daemon.document import SharedFile

PEER = "b0b0b0b0b0b0b0b0"


@pytest.fixture
def shared(tmp_path: Path, notebooks_dir: Path) -> SharedFile:
    path = copy_notebook(notebooks_dir / SAMPLE, tmp_path / "analysis.ipynb")
    return SharedFile.create(path, UpdateStore(tmp_path / "doc.sqlite"), THIS_DAEMON)


def peer_of(shared: SharedFile) -> NotebookEngine:
    """A peer that has everything ``shared`` has now, its file written."""
    peer = NotebookEngine.from_updates([shared.engine.full_state()])
    peer.remember_written(peer.render())
    return peer


def peer_saves(peer: NotebookEngine, index: int, line: str) -> bytes:
    update = peer.ingest(
        render_with_line(peer.render(), index, line), author=Author(PEER, time.time())
    ).update
    assert update is not None
    return update


def deliver(shared: SharedFile, update: bytes) -> None:
    shared.doc.apply_update(update)  # as the sync session does
    shared.apply_remote(update, PEER)
    shared.write()


def save_here(shared: SharedFile, index: int, line: str) -> None:
    shared.path.write_text(render_with_line(shared.path.read_text(), index, line))
    shared.read_and_ingest()


def log(shared: SharedFile) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = changelog.log_answer(shared.store, 10)["entries"]
    return entries


def cells(entry: dict[str, object]) -> list[tuple[object, ...]]:
    found = entry["cells"]
    assert isinstance(found, list)
    return [(cell["index"], cell["first_line"], tuple(cell["parts"])) for cell in found]


def test_saves_and_peers_updates_are_logged_by_author_with_their_cells(
    shared: SharedFile,
) -> None:
    peer = peer_of(shared)
    save_here(shared, 2, "# mine")
    deliver(shared, peer_saves(peer, 5, "# theirs"))

    theirs, mine, shared_entry = log(shared)
    assert (theirs["member"], theirs["kind"]) == (PEER, changelog.PEER)
    assert cells(theirs) == [(5, "# theirs", ("source",))]
    assert (mine["member"], mine["kind"]) == (THIS_DAEMON, changelog.SAVE)
    assert cells(mine) == [(2, "# mine", ("source",))]
    assert shared_entry["kind"] == changelog.SHARE
    assert not theirs["concurrent"] and not mine["concurrent"]
    assert changelog.recent_concurrent(shared.store, time.time()) == []


def test_a_concurrent_edit_is_logged_and_shown_with_both_members(shared: SharedFile) -> None:
    peer = peer_of(shared)
    from_peer = peer_saves(peer, 3, "# theirs")  # made before our save reached the peer
    save_here(shared, 3, "# mine")
    deliver(shared, from_peer)

    (newest, *_) = log(shared)
    (found,) = newest["concurrent"]
    assert (found["index"], found["members"]) == (3, sorted([THIS_DAEMON, PEER]))
    (shown,) = changelog.recent_concurrent(shared.store, time.time())
    assert shown["index"] == 3 and shown["member_labels"] == sorted([THIS_DAEMON, PEER])
    # A day later, status no longer lists it; the log still does.
    assert changelog.recent_concurrent(shared.store, time.time() + 2 * 86400) == []


def test_the_log_survives_a_restart(shared: SharedFile) -> None:
    save_here(shared, 2, "# before the restart")
    shared.store.close()
    restarted = SharedFile.restore(shared.path, UpdateStore(shared.store.path), THIS_DAEMON)
    save_here(restarted, 4, "# after")

    after, before, _ = log(restarted)
    assert cells(after) == [(4, "# after", ("source",))]
    assert cells(before) == [(2, "# before the restart", ("source",))]


def test_a_cell_edited_below_a_cell_a_peer_added_is_logged_where_it_is_now(
    shared: SharedFile,
) -> None:
    peer = peer_of(shared)

    def add_a_cell_and_edit_another(text: str) -> str:
        nb = json.loads(render_with_line(text, 5, "# edited"))
        nb["cells"].insert(0, {"cell_type": "markdown", "metadata": {}, "source": ["# new"]})
        return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"

    update = peer.ingest(
        add_a_cell_and_edit_another(peer.render()), author=Author(PEER, time.time())
    ).update
    assert update is not None
    deliver(shared, update)

    (entry, *_) = log(shared)
    assert sorted(cells(entry)) == [(0, "# new", ("new",)), (6, "# edited", ("source",))]


def test_a_deleted_cell_is_logged_without_an_index(shared: SharedFile) -> None:
    nb = json.loads(shared.path.read_text())
    del nb["cells"][1]
    shared.path.write_text(json.dumps(nb, indent=1) + "\n")
    shared.read_and_ingest()

    (entry, _) = log(shared)
    (cell,) = entry["cells"]
    assert (cell["index"], cell["parts"]) == (None, ["deleted"])


def test_a_burst_of_updates_without_stamps_is_one_entry(shared: SharedFile) -> None:
    """Keystrokes typed in a peer's JupyterLab room come unstamped, one update each."""
    for index in range(5):
        deliver(shared, peer_update(shared.engine, 2, f"typed {index}"))
    save_here(shared, 4, "# mine")
    deliver(shared, peer_update(shared.engine, 2, "typed after my save"))

    assert [(e["member"], e["kind"], len(e["cells"])) for e in log(shared)] == [
        (PEER, changelog.PEER, 0),
        (THIS_DAEMON, changelog.SAVE, 1),
        (PEER, changelog.PEER, 0),
        (THIS_DAEMON, changelog.SHARE, 0),
    ]
