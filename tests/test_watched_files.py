"""What a batch of raw changes means for the watched files (adapters/watched_files.py), with
real files and no watch running: the disk decides each event's kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2prtc.adapters.watched_files import (
    ChangeKind,
    FileEvent,
    WatchedFiles,
    WatchedFolderMissing,
    normalised,
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    resolved = tmp_path.resolve()  # as changes are reported
    (resolved / "a.ipynb").write_text("{}")
    (resolved / "b.ipynb").write_text("{}")
    return resolved


def test_one_event_per_watched_file_its_kind_from_the_disk(folder: Path) -> None:
    files = WatchedFiles()
    files.add(folder / "a.ipynb")
    files.add(folder / "gone.ipynb")
    raw = {folder / "a.ipynb", folder / "gone.ipynb", folder / "b.ipynb", folder / "tmp~"}
    assert files.events_for(raw) == [
        FileEvent(folder / "a.ipynb", ChangeKind.CHANGED),
        FileEvent(folder / "gone.ipynb", ChangeKind.DELETED),
    ]


def test_a_rename_says_where_the_file_went_only_within_its_folder(folder: Path) -> None:
    files = WatchedFiles()
    old, other = folder / "old.ipynb", folder / "sub"
    files.add(old)
    within = files.events_for(set(), {old: folder / "new.ipynb"})
    away = files.events_for(set(), {old: other / "new.ipynb"})
    assert within == [FileEvent(old, ChangeKind.DELETED, folder / "new.ipynb")]
    assert away == [FileEvent(old, ChangeKind.DELETED)]


def test_events_name_the_file_as_given(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(folder)
    files = WatchedFiles()
    files.add(Path("a.ipynb"))
    assert Path("a.ipynb") in files and folder / "a.ipynb" in files
    assert files.folders() == {folder}
    (event,) = files.events_for({normalised(Path("a.ipynb"))})
    assert event == FileEvent(Path("a.ipynb"), ChangeKind.CHANGED)


def test_a_removed_file_gets_no_event(folder: Path) -> None:
    files = WatchedFiles()
    files.add(folder / "a.ipynb")
    files.remove(folder / "a.ipynb")
    assert files.events_for({folder / "a.ipynb"}) == []
    assert files.given() == set() and files.folders() == frozenset()


def test_a_file_in_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WatchedFolderMissing):
        WatchedFiles().add(tmp_path / "nowhere" / "a.ipynb")
