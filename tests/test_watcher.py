"""FileWatcher over real files and real inotify, the way editors save; the tests using the
`watcher` fixture run with inotify read directly and with the watchfiles fallback."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from environment import missing

from p2prtc.adapters import inotify
from p2prtc.adapters.watcher import ChangeKind, FileEvent, FileWatcher, WatchedFolderMissing

pytestmark = pytest.mark.timeout(20)

# Bounds a hang when an expected event never comes; not a speed requirement.
EVENT_WAIT = 5.0


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "nb.ipynb").write_text("v0")
    (tmp_path / "other.ipynb").write_text("v0")
    return tmp_path


@pytest.fixture(params=[True, False], ids=["inotify", "watchfiles"])
async def watcher(folder: Path, request: pytest.FixtureRequest) -> AsyncIterator[FileWatcher]:
    async with FileWatcher({folder / "nb.ipynb"}, use_inotify=request.param) as running:
        yield running


async def next_event(watcher: FileWatcher) -> FileEvent:
    return await asyncio.wait_for(anext(watcher), EVENT_WAIT)


async def events_until(watcher: FileWatcher, wanted: set[FileEvent]) -> set[FileEvent]:
    """Collect events until all `wanted` were seen (one write may give several events)."""
    seen: set[FileEvent] = set()
    while not wanted <= seen:
        seen.add(await next_event(watcher))
    return seen


def save_like_jupyter(path: Path, text: str) -> None:
    """Write a temp file next to the target, then rename it over the target."""
    temp = path.with_name(f".~{path.name}")
    temp.write_text(text)
    os.replace(temp, path)


def save_like_vim(path: Path, text: str) -> None:
    """Move the original away as a backup, write a new file, remove the backup."""
    backup = path.with_name(f"{path.name}~")
    os.rename(path, backup)
    path.write_text(text)
    backup.unlink()


async def test_plain_write(watcher: FileWatcher, folder: Path) -> None:
    (folder / "nb.ipynb").write_text("v1")
    assert await next_event(watcher) == FileEvent(folder / "nb.ipynb", ChangeKind.CHANGED)


@pytest.mark.parametrize("save", [save_like_jupyter, save_like_vim])
async def test_rename_over_saves(
    watcher: FileWatcher, folder: Path, save: Callable[[Path, str], None]
) -> None:
    for version in ("v1", "v2"):  # the second save proves the watch outlived the rename
        save(folder / "nb.ipynb", version)
        assert await next_event(watcher) == FileEvent(folder / "nb.ipynb", ChangeKind.CHANGED)


async def test_delete(watcher: FileWatcher, folder: Path) -> None:
    (folder / "nb.ipynb").unlink()
    assert await next_event(watcher) == FileEvent(folder / "nb.ipynb", ChangeKind.DELETED)


async def test_other_files_in_the_folder_are_ignored(watcher: FileWatcher, folder: Path) -> None:
    (folder / "other.ipynb").write_text("v1")
    (folder / "new.txt").write_text("x")
    (folder / "nb.ipynb").write_text("v1")
    # Had the other writes leaked, they would have come first.
    assert await next_event(watcher) == FileEvent(folder / "nb.ipynb", ChangeKind.CHANGED)


async def test_two_files_in_one_folder(folder: Path) -> None:
    a, b = folder / "nb.ipynb", folder / "other.ipynb"
    async with FileWatcher({a, b}) as watcher:
        a.write_text("v1")
        b.write_text("v1")
        seen = await events_until(
            watcher, {FileEvent(a, ChangeKind.CHANGED), FileEvent(b, ChangeKind.CHANGED)}
        )
    assert {event.path for event in seen} == {a, b}


async def test_files_in_two_folders_and_add_remove(watcher: FileWatcher, folder: Path) -> None:
    elsewhere = folder / "sub" / "far.ipynb"
    elsewhere.parent.mkdir()
    elsewhere.write_text("v0")
    await watcher.add(elsewhere)
    assert watcher.paths == {folder / "nb.ipynb", elsewhere}
    elsewhere.write_text("v1")
    assert await next_event(watcher) == FileEvent(elsewhere, ChangeKind.CHANGED)
    # The first folder is still watched after the watch restarted for the new one.
    (folder / "nb.ipynb").write_text("v1")
    assert await next_event(watcher) == FileEvent(folder / "nb.ipynb", ChangeKind.CHANGED)

    await watcher.remove(folder / "nb.ipynb")
    (folder / "nb.ipynb").write_text("v2")
    elsewhere.write_text("v2")
    assert await next_event(watcher) == FileEvent(elsewhere, ChangeKind.CHANGED)


async def test_relative_paths_are_reported_as_given(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(folder)
    async with FileWatcher({Path("nb.ipynb")}) as watcher:
        save_like_jupyter(folder / "nb.ipynb", "v1")
        assert await next_event(watcher) == FileEvent(Path("nb.ipynb"), ChangeKind.CHANGED)


async def test_close_ends_iteration(folder: Path) -> None:
    watcher = FileWatcher({folder / "nb.ipynb"})
    await watcher.start()
    await watcher.close()
    assert [event async for event in watcher] == []


async def test_missing_folder_is_refused(folder: Path) -> None:
    with pytest.raises(WatchedFolderMissing):
        FileWatcher({folder / "nowhere" / "nb.ipynb"})
    async with FileWatcher() as watcher:
        with pytest.raises(WatchedFolderMissing):
            await watcher.add(folder / "nowhere" / "nb.ipynb")
        assert watcher.paths == set()


async def test_no_default_ignore_rules(tmp_path: Path) -> None:
    # watchfiles ignores e.g. anything under .git or node_modules, and names ending in "~",
    # by default; a shared file must be watched wherever it lives and whatever its name.
    hidden = tmp_path / "node_modules" / "nb.ipynb~"
    hidden.parent.mkdir()
    hidden.write_text("v0")
    async with FileWatcher({hidden}) as watcher:
        hidden.write_text("v1")
        assert await next_event(watcher) == FileEvent(hidden, ChangeKind.CHANGED)


async def test_a_folder_moved_away_reads_as_its_files_gone(tmp_path: Path) -> None:
    """The folder of a watched file is renamed (no event for the file itself): the file is
    reported deleted (the inotify path used to stop watching without a word)."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "nb.ipynb").write_text("v0")
    async with FileWatcher({folder / "nb.ipynb"}) as watcher:
        folder.rename(tmp_path / "renamed")
        assert FileEvent(folder / "nb.ipynb", ChangeKind.DELETED) in await events_until(
            watcher, {FileEvent(folder / "nb.ipynb", ChangeKind.DELETED)}
        )


async def test_a_folder_made_where_the_file_was_is_reported(
    watcher: FileWatcher, folder: Path
) -> None:
    """So the daemon reads it and reports "is a folder" instead of waiting for a save."""
    (folder / "nb.ipynb").unlink()
    assert await next_event(watcher) == FileEvent(folder / "nb.ipynb", ChangeKind.DELETED)
    (folder / "nb.ipynb").mkdir()
    assert await next_event(watcher) == FileEvent(folder / "nb.ipynb", ChangeKind.CHANGED)


@pytest.fixture
def with_inotify() -> None:
    if not inotify.available():
        missing("inotify is not available here")


@pytest.mark.parametrize("use_inotify", [True, False], ids=["inotify", "watchfiles"])
async def test_a_rename_in_its_folder_says_where_the_file_went(
    folder: Path, use_inotify: bool
) -> None:
    """inotify pairs the rename's two events: the new name comes with the deletion. The
    watchfiles fallback sees a file gone, no more (the daemon then goes by content)."""
    if use_inotify and not inotify.available():
        missing("inotify is not available here")
    nb, renamed = folder / "nb.ipynb", folder / "renamed.ipynb"
    async with FileWatcher({nb}, use_inotify=use_inotify) as watcher:
        os.rename(nb, renamed)
        expected = FileEvent(nb, ChangeKind.DELETED, renamed if use_inotify else None)
        assert await next_event(watcher) == expected
        # The new name is not watched: a save there is not reported (the daemon decides
        # whether to follow it, and then watches it).
        os.rename(renamed, nb)
        assert await next_event(watcher) == FileEvent(nb, ChangeKind.CHANGED)


async def test_the_new_name_is_spelled_like_the_watched_path(
    folder: Path, monkeypatch: pytest.MonkeyPatch, with_inotify: None
) -> None:
    monkeypatch.chdir(folder)
    async with FileWatcher({Path("nb.ipynb")}) as watcher:
        os.rename("nb.ipynb", "renamed.ipynb")
        assert await next_event(watcher) == FileEvent(
            Path("nb.ipynb"), ChangeKind.DELETED, Path("renamed.ipynb")
        )


async def test_a_move_to_another_folder_reads_as_deleted(folder: Path, with_inotify: None) -> None:
    """Even into a watched folder, where inotify pairs the two events: a move elsewhere is
    never a rename (the rule must not depend on what else is watched)."""
    nb, far = folder / "nb.ipynb", folder / "sub" / "far.ipynb"
    far.parent.mkdir()
    far.write_text("v0")
    async with FileWatcher({nb, far}) as watcher:
        os.rename(nb, far.parent / "nb.ipynb")
        assert await next_event(watcher) == FileEvent(nb, ChangeKind.DELETED)


async def test_vim_saves_are_still_changes(folder: Path, with_inotify: None) -> None:
    """vim renames the file to its backup name before writing the new one: the hint may
    come with a deletion, but the file read back is a change."""
    nb = folder / "nb.ipynb"
    async with FileWatcher({nb}) as watcher:
        save_like_vim(nb, "v1")
        seen = await events_until(watcher, {FileEvent(nb, ChangeKind.CHANGED)})
    assert seen <= {
        FileEvent(nb, ChangeKind.CHANGED),
        FileEvent(nb, ChangeKind.DELETED, nb.with_name("nb.ipynb~")),
    }


def test_a_rename_split_across_two_reads_is_still_paired(folder: Path, with_inotify: None) -> None:
    """One rename(2) queues "moved from" and "moved to" back to back, but a read can fall
    between them: the kernel's own two events, handed over in two reads, still pair."""
    nb, renamed = folder / "nb.ipynb", folder / "renamed.ipynb"
    watch = inotify.Inotify(frozenset({folder}))
    try:
        os.rename(nb, renamed)
        data = os.read(watch.fd, 4096)
        first = inotify._EVENT.size + inotify._EVENT.unpack_from(data)[3]
        assert len(data) > first, "the kernel queued both events of the rename"
        changes = inotify.Changes()
        watch._add_changes(data[:first], changes)
        assert (changes.paths, changes.renames) == ({nb}, {})
        watch._add_changes(data[first:], changes)
        assert (changes.paths, changes.renames) == ({nb, renamed}, {nb: renamed})
    finally:
        watch.close()
