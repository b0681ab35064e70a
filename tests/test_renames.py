"""Where a shared file went (daemon/renames.py): real files in a real folder, and a real
SharedFile deciding which content is its notebook; and a real Share and Registry deciding
when. The watcher's part (inotify's rename hint) is in test_watcher.py; two daemons' (the
share follows, durably, peers unaffected) in test_e2e_renames.py."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from daemons import SAMPLE, copy_notebook, edit_cell
from jupyter_servers import until
from nbgen import THIS_DAEMON, peer_update

from p2prtc.adapters.store import UpdateStore
from p2prtc.adapters.watcher import FileWatcher
from p2prtc.daemon import missing_file
from p2prtc.daemon.document import SharedFile
from p2prtc.daemon.registry import Registry
from p2prtc.daemon.renames import RENAME_WINDOW_S, RENAMED_WHILE_STOPPED, Gone, new_name
from p2prtc.daemon.share import ShareState
from p2prtc.daemon.state import ShareRecord, load_records


@pytest.fixture
def shared(tmp_path: Path, notebooks_dir: Path) -> Iterator[SharedFile]:
    (tmp_path / "work").mkdir()
    path = copy_notebook(notebooks_dir / SAMPLE, tmp_path / "work" / "nb.ipynb")
    file = SharedFile.create(path, UpdateStore(tmp_path / "doc.sqlite"), THIS_DAEMON)
    yield file
    file.store.close()


def went(shared: SharedFile, moved_to: Path | None = None) -> Path | None:
    """The file is seen gone now: its new name."""
    return new_name(shared.path, Gone(time.time(), moved_to), shared.own_versions())


def test_the_renamed_file_is_found_by_its_content(shared: SharedFile) -> None:
    """Without the watcher's hint (the watchfiles fallback): the one file holding it."""
    (shared.path.parent / "unrelated.txt").write_text("not a notebook")
    renamed = shared.path.with_name("renamed.ipynb")
    os.rename(shared.path, renamed)
    assert went(shared) == renamed


def test_save_as_then_delete_is_a_rename(shared: SharedFile) -> None:
    saved_as = shared.path.with_name("saved-as.ipynb")
    saved_as.write_bytes(shared.path.read_bytes())
    shared.path.unlink()
    assert went(shared) == saved_as


def test_the_watchers_hint_wins_whatever_the_file_holds_now(shared: SharedFile) -> None:
    """mv, then an edit under the new name before the grace is over: the same file."""
    hinted = shared.path.with_name("hinted.ipynb")
    os.rename(shared.path, hinted)
    edit_cell(hinted, 0, "edited under its new name")
    (shared.path.parent / "copy.ipynb").write_bytes(shared.engine.render().encode())
    assert went(shared, hinted) == hinted


def test_a_stale_hint_falls_back_to_the_content(shared: SharedFile) -> None:
    """Renamed twice in the grace: the hint names the middle name, gone by now."""
    middle, last = shared.path.with_name("middle.ipynb"), shared.path.with_name("last.ipynb")
    os.rename(shared.path, middle)
    os.rename(middle, last)
    assert went(shared, middle) == last


def test_a_deleted_file_has_no_new_name(shared: SharedFile) -> None:
    shared.path.unlink()
    assert went(shared) is None


def test_edited_content_is_not_the_notebook(shared: SharedFile) -> None:
    """Without the hint, only the exact content counts: an edited copy is another file."""
    copy = shared.path.with_name("copy.ipynb")
    shutil.copyfile(shared.path, copy)
    edit_cell(copy, 0, "an edit in the copy")
    shared.path.unlink()
    assert went(shared) is None


def test_two_copies_are_ambiguous(shared: SharedFile) -> None:
    for name in ("one.ipynb", "two.ipynb"):
        shutil.copyfile(shared.path, shared.path.with_name(name))
    shared.path.unlink()
    assert went(shared) is None


def test_hidden_files_and_other_folders_are_not_candidates(shared: SharedFile) -> None:
    """An editor's temp file (hidden), a copy in a subfolder: neither is the new name."""
    shutil.copyfile(shared.path, shared.path.with_name(".~nb.ipynb"))
    (shared.path.parent / "sub").mkdir()
    os.rename(shared.path, shared.path.parent / "sub" / "nb.ipynb")
    assert went(shared) is None


def test_a_copy_older_than_the_window_is_not_a_rename(shared: SharedFile) -> None:
    """A backup made long before the delete is a backup. (The deletion is dated later
    instead of the copy earlier: ctime cannot be set back.)"""
    shutil.copyfile(shared.path, shared.path.with_name("backup.ipynb"))
    shared.path.unlink()
    later = Gone(time.time() + RENAME_WINDOW_S + 1)
    assert new_name(shared.path, later, shared.own_versions()) is None
    # Found missing at start, though, it may have gone any time: the copy is its new name.
    at_start = Gone(RENAMED_WHILE_STOPPED)
    assert new_name(shared.path, at_start, shared.own_versions()) == shared.path.with_name(
        "backup.ipynb"
    )


@pytest.fixture
async def registry(
    shared: SharedFile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Registry]:
    """A real Registry holding ``shared`` as an active Share (no watcher running: the test
    plays it). The grace is short: the outcome does not depend on it."""
    monkeypatch.setattr(missing_file, "DELETED_FILE_GRACE_S", 0.05)
    registry = Registry(tmp_path / "home", FileWatcher())
    share = registry.open_share(ShareRecord.new(shared.path, "me"), shared, ShareState.ACTIVE)
    yield registry
    await share.close()


def peer_edit(shared: SharedFile, line: str) -> bytes:
    """A peer's edit of cell 2, applied to the doc as the sync session does: its update."""
    update = peer_update(shared.engine, 2, line)
    shared.doc.apply_update(update)
    return update


async def test_a_peers_edit_in_the_instant_of_a_rename_waits_for_the_decision(
    shared: SharedFile, registry: Registry
) -> None:
    """The writer finds the file missing before the watcher has said anything: writing the
    old name back now would make the rename look undone. It waits for the grace like a
    deletion the watcher saw, then follows the file, edit and all."""
    (share,) = registry.shares.values()
    old, renamed = shared.path, shared.path.with_name("renamed.ipynb")
    os.rename(old, renamed)
    share.remote_update(peer_edit(shared, "a peer's edit"))
    await until(lambda: b"a peer's edit" in renamed.read_bytes(), what="the edit written")
    assert not old.exists()
    assert share.path == renamed and registry.share_for_path(renamed) is share
    assert [record.path for record in load_records(registry.home)] == [renamed]


async def test_a_peers_edit_held_while_the_file_was_missing_is_written_when_it_is_back(
    shared: SharedFile, registry: Registry
) -> None:
    """The file renamed away and back within the grace (an undo; vim's backup dance when
    the buffer is unchanged): a peer's edit that came while it was missing is held, and
    written once the grace is over (the file, unchanged, gives nothing to merge)."""
    (share,) = registry.shares.values()
    path, away = shared.path, shared.path.with_name("nb.ipynb~")
    os.rename(path, away)
    share.missing.noticed(away)  # as the watcher reports it
    share.remote_update(peer_edit(shared, "a peer's edit"))
    # The writer wakes on the next turns of the loop and finds the file missing: held.
    for _ in range(3):
        await asyncio.sleep(0)
    assert not path.exists()
    os.rename(away, path)
    await share.file_changed()  # as the watcher reports it
    await until(lambda: "a peer's edit" in path.read_text(), what="the held edit written")
    assert share.path == path
