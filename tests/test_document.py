"""SharedFile over a real update log and real files: versions an editor may save from.

An editor's buffer can be older than every version the engine keeps whole; those versions
are rebuilt from the update log, also after compaction and after a restart. A save from a
version is also the end of everything older: an undo back to an old text is a change.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from daemons import SAMPLE, copy_notebook
from nbgen import (
    THIS_DAEMON,
    nbformat_problem,
    peer_save,
    peer_update,
    render_with_line,
    render_with_move,
    upgrade_to_45,
)
from pycrdt import Doc

from p2prtc.adapters.store import UpdateStore
from p2prtc.core.model import doc_to_notebook, without_cell_ids
from p2prtc.core.notebook import render_notebook
from p2prtc.core.remembered import MAX_VERSIONS
from p2prtc.daemon import file_writer, versions
from p2prtc.daemon.document import SharedFile

WRITES = 3 * MAX_VERSIONS


@pytest.fixture
def shared(tmp_path: Path, notebooks_dir: Path) -> SharedFile:
    path = copy_notebook(notebooks_dir / SAMPLE, tmp_path / "analysis.ipynb")
    return SharedFile.create(path, UpdateStore(tmp_path / "doc.sqlite"), THIS_DAEMON)


def receive(shared: SharedFile, index: int, line: str) -> None:
    """A peer's edit arrives: the daemon applies, persists and writes it."""
    deliver(shared, peer_update(shared.engine, index, line))


def deliver(shared: SharedFile, update: bytes) -> bytes | None:
    """A peer's update arrives: applied, then persisted and written; returns what the write
    sends to the peers (a repair of moved cells)."""
    shared.doc.apply_update(update)
    shared.apply_remote(update)
    return shared.write()


class Killed(BaseException):
    """The daemon dies (kill -9) at this point."""


def deliver_and_die_before_the_rename(
    shared: SharedFile, update: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer's update arrives; the daemon is killed once the write persisted it (and its
    record), before the file shows it."""

    def killed(*_: object, **__: object) -> None:
        raise Killed

    monkeypatch.setattr(file_writer, "atomic_write", killed)
    with pytest.raises(Killed):
        deliver(shared, update)
    monkeypatch.undo()


def remote_lines(shared: SharedFile, count: int, tag: str = "REMOTE") -> list[str]:
    lines = [f"{tag} {index:03d}" for index in range(count)]
    for index, line in enumerate(lines):
        receive(shared, index % 5, line)
    return lines


def restarted(shared: SharedFile) -> SharedFile:
    shared.store.close()
    return SharedFile.restore(shared.path, UpdateStore(shared.store.path), shared.member)


def save(shared: SharedFile, text: str) -> str:
    """The editor writes ``text``; the daemon ingests it. The file as it is afterwards."""
    shared.path.write_text(text)
    shared.read_and_ingest()
    return shared.path.read_text()


def assert_once(text: str, lines: list[str]) -> None:
    assert {line: text.count(line) for line in lines} == dict.fromkeys(lines, 1)


@pytest.mark.parametrize("restart", [False, True], ids=["running", "restarted"])
def test_buffer_older_than_the_kept_versions_keeps_remote_edits(
    shared: SharedFile, restart: bool
) -> None:
    buffer = shared.path.read_text()
    remote = remote_lines(shared, WRITES)
    if restart:
        shared = restarted(shared)

    final = save(shared, render_with_line(buffer, 6, "USER LINE"))

    assert_once(final, [*remote, "USER LINE"])
    assert shared.engine.render() == final


@pytest.mark.parametrize("restart", [False, True], ids=["running", "restarted"])
def test_stale_buffer_saved_twice_across_many_writes_keeps_everything(
    shared: SharedFile, restart: bool
) -> None:
    """The editor never reloads: its first save is merged with a remote line it lacks (the
    file then differs from its buffer), and its second save comes many writes later."""
    buffer = shared.path.read_text()
    early = remote_lines(shared, 1, "EARLY")
    buffer = render_with_line(buffer, 6, "MINE 1")
    save(shared, buffer)
    late = remote_lines(shared, WRITES, "LATE")
    if restart:
        shared = restarted(shared)

    final = save(shared, render_with_line(buffer, 7, "MINE 2"))

    assert_once(final, [*early, *late, "MINE 1", "MINE 2"])


def test_compaction_keeps_the_versions_a_buffer_may_start_from(
    shared: SharedFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(versions, "COMPACT_AFTER_UPDATES", 4)
    early = remote_lines(shared, 6, "EARLY")
    buffer = shared.path.read_text()
    late = remote_lines(shared, WRITES, "LATE")
    rows = shared.store.count()

    final = save(shared, render_with_line(buffer, 6, "USER LINE"))

    assert_once(final, [*early, *late, "USER LINE"])
    # The save ends the older versions: the next write compacts the log up to it.
    receive(shared, 0, "AFTER")
    assert shared.store.count() < rows
    assert_once(restarted(shared).engine.render(), [*early, *late, "USER LINE", "AFTER"])


def test_a_restart_keeps_as_many_versions_whole_as_before(shared: SharedFile) -> None:
    """The newest version is recorded three times (history, base, pending write): restored
    once, so the oldest versions an editor may still save from stay whole."""
    save(shared, render_with_line(shared.path.read_text(), 1, "USER LINE"))
    remote_lines(shared, MAX_VERSIONS - 2)
    before = shared.own_versions()
    assert len(before) == MAX_VERSIONS - 1

    assert restarted(shared).own_versions() == before


@pytest.mark.parametrize("restart", [False, True], ids=["running", "restarted"])
@pytest.mark.parametrize("remote_write", [False, True], ids=["text-read", "text-written"])
def test_undo_back_to_an_older_text_is_a_change(
    shared: SharedFile, restart: bool, remote_write: bool
) -> None:
    """With ``remote_write``, the older text is one the daemon wrote: the record of its
    last write outlives the save made from it, and a restart must not bring that version
    back, or the undo would look like an unchanged save of it."""
    if remote_write:
        remote_lines(shared, 1)
    older = shared.path.read_text()
    save(shared, render_with_line(older, 2, "TYPED THEN UNDONE"))
    if restart:
        shared = restarted(shared)

    final = save(shared, older)

    assert "TYPED THEN UNDONE" not in final
    assert final == older


def test_unchanged_save_of_an_old_buffer_is_written_over(shared: SharedFile) -> None:
    buffer = shared.path.read_text()
    remote = remote_lines(shared, 2)

    final = save(shared, buffer)  # Ctrl-S in an editor that never reloaded

    assert_once(final, remote)


# --- moved cells (core.repair) through the real store -----------------------------------


@pytest.fixture(params=[4, 5], ids=["v4.4-no-ids", "v4.5-ids"])
def minor_shared(request: pytest.FixtureRequest, shared: SharedFile) -> SharedFile:
    if request.param == 4:
        return shared
    shared.path.write_text(upgrade_to_45(shared.path.read_text()))
    shared.read_and_ingest()
    return shared


def assert_valid(text: str) -> None:
    """What Jupyter checks when it opens the file, and ids unique in 4.5."""
    assert nbformat_problem(text) is None


@pytest.mark.parametrize("restart", [False, True], ids=["running", "restarted"])
def test_line_typed_into_a_cell_a_peer_moves_lands_in_the_moved_cell(
    minor_shared: SharedFile, restart: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = minor_shared
    moved = peer_save(shared.engine, lambda text: render_with_move(text, 3, 0))
    cell = shared.engine.notebook()["cells"][3]["source"]
    save(shared, render_with_line(shared.path.read_text(), 3, "USER LINE"))

    if restart:  # killed before the rename: the restart writes the persisted repair
        deliver_and_die_before_the_rename(shared, moved, monkeypatch)
        shared = restarted(shared)
        shared.catch_up()
    else:
        assert deliver(shared, moved) is not None  # the repair, for the peers

    final = shared.path.read_text()
    assert_valid(final)
    assert_once(final, ["USER LINE"])
    assert shared.engine.notebook()["cells"][0]["source"] == "USER LINE\n" + cell
    # The peer that moved the cell gets the same notebook from the updates it lacks.
    peer = Doc()
    for update in (shared.store.updates()[0], moved, *shared.store.updates()[1:]):
        peer.apply_update(update)
    assert render_notebook(without_cell_ids(doc_to_notebook(peer))) == final


def test_cell_moved_by_two_peers_at_once_is_there_once(minor_shared: SharedFile) -> None:
    shared = minor_shared
    cells = len(shared.engine.notebook()["cells"])
    theirs = peer_save(shared.engine, lambda text: render_with_move(text, 3, cells - 1))
    source = shared.engine.notebook()["cells"][3]["source"]
    save(shared, render_with_move(shared.path.read_text(), 3, 0))

    deliver(shared, theirs)

    final = shared.path.read_text()
    assert_valid(final)
    after = [cell["source"] for cell in shared.engine.notebook()["cells"]]
    assert after.count(source) == 1
    assert after.index(source) in (0, cells - 1)
    assert len(after) == cells


@pytest.mark.parametrize("restart", [False, True], ids=["running", "restarted"])
def test_stale_buffer_that_moves_a_cell_keeps_the_lines_peers_typed_into_it(
    minor_shared: SharedFile, restart: bool
) -> None:
    """Found by the chaos test (seed 3709939785): an editor that did not reload moves a cell
    peers typed into meanwhile. The move copies the cell as the buffer had it; the lines
    the file showed in it must go into the copy."""
    shared = minor_shared
    buffer = shared.path.read_text()
    remote = remote_lines(shared, 2)  # into cells 0 and 1
    moved = render_with_move(buffer, 0, 3)
    if restart:  # saved while the daemon is down
        shared.path.write_text(moved)
        shared = restarted(shared)
        shared.catch_up()
        final = shared.path.read_text()
    else:
        final = save(shared, moved)

    assert_valid(final)
    assert_once(final, remote)
    assert remote[0] in shared.engine.notebook()["cells"][3]["source"]


def test_stale_save_whose_move_matches_a_peers_order_keeps_the_peers_lines(
    minor_shared: SharedFile,
) -> None:
    """Found by the chaos test (seed 3709939785, soak seeds 461 and 758): the user moves the
    first cell further down in a stale buffer, so the second comes first, as in a newer
    version where a peer moved the first cell one down. That order is no proof the editor
    had the newer version: merged against it, the save deleted the peers' lines it lacks."""
    shared = minor_shared
    buffer = shared.path.read_text()
    remote = remote_lines(shared, 3)  # into cells 0, 1 and 2
    deliver(shared, peer_save(shared.engine, lambda text: render_with_move(text, 0, 1)))

    final = save(shared, render_with_move(buffer, 0, 3))

    assert_valid(final)
    assert_once(final, remote)


# --- fidelity: a file's own form survives restarts and remote edits --------------------------


def json_dump_style(text: str) -> str:
    """The notebook as a script using ``json.dump`` writes it: each source one string."""
    nb = json.loads(text)
    for cell in nb["cells"]:
        cell["source"] = "".join(cell["source"])
    return json.dumps(nb, indent=1)


def test_restart_leaves_a_file_in_its_own_form_alone(shared: SharedFile) -> None:
    save(shared, json_dump_style(render_with_line(shared.path.read_text(), 2, "EDITED")))
    before = shared.path.read_bytes()

    shared = restarted(shared)
    assert shared.catch_up() is None

    assert shared.path.read_bytes() == before


def test_remote_edit_keeps_sources_written_as_one_string(shared: SharedFile) -> None:
    save(shared, json_dump_style(shared.path.read_text()))
    shared = restarted(shared)
    shared.catch_up()

    receive(shared, 3, "REMOTE")

    cells = json.loads(shared.path.read_text())["cells"]
    assert all(isinstance(cell["source"], str) for cell in cells)
    assert cells[3]["source"].startswith("REMOTE\n")
