"""SharedFile over a real update log and real files: versions an editor may save from.

An editor's buffer can be older than every version the engine keeps whole; those versions
are rebuilt from the update log, also after compaction and after a restart. A save from a
version is also the end of everything older: an undo back to an old text is a change.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from daemons import SAMPLE, copy_notebook
from nbgen import peer_update, render_with_line

from p2prtc.adapters.store import UpdateStore
from p2prtc.core.engine import MAX_VERSIONS
from p2prtc.daemon import document
from p2prtc.daemon.document import SharedFile

WRITES = 3 * MAX_VERSIONS


@pytest.fixture
def shared(tmp_path: Path, notebooks_dir: Path) -> SharedFile:
    path = copy_notebook(notebooks_dir / SAMPLE, tmp_path / "analysis.ipynb")
    return SharedFile.create(path, UpdateStore(tmp_path / "doc.sqlite"))


def receive(shared: SharedFile, index: int, line: str) -> None:
    """A peer's edit arrives: the daemon applies, persists and writes it."""
    update = peer_update(shared.engine, index, line)
    shared.doc.apply_update(update)
    shared.apply_remote(update)
    shared.write()


def remote_lines(shared: SharedFile, count: int, tag: str = "REMOTE") -> list[str]:
    lines = [f"{tag} {index:03d}" for index in range(count)]
    for index, line in enumerate(lines):
        receive(shared, index % 5, line)
    return lines


def restarted(shared: SharedFile) -> SharedFile:
    shared.store.close()
    return SharedFile.restore(shared.path, UpdateStore(shared.store.path))


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
    monkeypatch.setattr(document, "COMPACT_AFTER_UPDATES", 4)
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


@pytest.mark.parametrize("restart", [False, True], ids=["running", "restarted"])
def test_undo_back_to_an_older_text_is_a_change(shared: SharedFile, restart: bool) -> None:
    original = shared.path.read_text()
    save(shared, render_with_line(original, 2, "TYPED THEN UNDONE"))
    if restart:
        shared = restarted(shared)

    final = save(shared, original)

    assert "TYPED THEN UNDONE" not in final
    assert final == original


def test_unchanged_save_of_an_old_buffer_is_written_over(shared: SharedFile) -> None:
    buffer = shared.path.read_text()
    remote = remote_lines(shared, 2)

    final = save(shared, buffer)  # Ctrl-S in an editor that never reloaded

    assert_once(final, remote)
