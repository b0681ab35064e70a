"""Crash safety (issue 6): kill -9 a daemon while it writes the notebook or its store.

Two real daemons on loopback. The sharer A makes bursts of edits; the joiner B, which
receives them, persists each in its store and renders it to its file, is killed with SIGKILL
at random moments, or right after it replaced its file, and restarted. Meanwhile a poller
reads B's file continuously.

What must hold: every read of the file, by the poller or after a kill, is a valid notebook
(writes are atomic); the store opens again (the daemon restarts and answers); an edit B's
file showed before the kill is in B's store (persisted before the file showed it); after
reconvergence every edit is in both files, exactly once (a restart must not take the
daemon's own interrupted write for a user's save and apply its remote edits again).

The last test hits the same windows deterministically, in process: a real store and engine,
the crash injected just before or just after the rename of a write.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemons import (
    SAMPLE,
    FilePoller,
    Pair,
    copy_notebook,
    edit_cell,
    kill_9,
    notebook_problem,
    stored_updates,
    synced_pair,
    wait_until,
)
from nbgen import THIS_DAEMON, peer_update, render_with_line

from p2prtc.adapters.files import Signature, atomic_write
from p2prtc.adapters.store import UpdateStore
from p2prtc.daemon import file_writer
from p2prtc.daemon.document import SharedFile

pytestmark = pytest.mark.timeout(150)

RANDOM_KILLS = 4
TARGETED_KILLS = 3
EDITS_PER_BURST = 4
EDIT_GAP_S = 0.03
# Kills land anywhere from before the first edit of a burst reaches B to after the last.
KILL_WINDOW_S = 0.3


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, notebooks_dir: Path) -> Iterator[Pair]:
    with synced_pair(tmp_path_factory.mktemp("crash"), notebooks_dir / SAMPLE) as pair:
        yield pair


def markers_in(path: Path, markers: list[str]) -> list[str]:
    text = path.read_text()
    return [marker for marker in markers if marker in text]


def check_after_kill(pair: Pair, markers: list[str]) -> None:
    """The file is a notebook; what it shows is durable in the store; the daemon restarts."""
    problem = notebook_problem(pair.b_file)
    assert problem is None, f"B's file after kill -9: {problem}"
    stored = b"".join(stored_updates(pair.b.home))
    shown = markers_in(pair.b_file, markers)
    assert [m for m in shown if m.encode() not in stored] == [], "shown but not persisted"
    pair.b.start()  # answers on its control socket: the store opened


def converged_once(pair: Pair, markers: list[str]) -> None:
    """After reconvergence: both files equal, every edit in them exactly once."""

    def converged() -> bool:
        return (
            pair.a_file.read_bytes() == pair.b_file.read_bytes()
            and markers_in(pair.b_file, markers) == markers
        )

    wait_until(converged, 30, "both files equal, with every edit")
    counts = {marker: pair.b_file.read_text().count(marker) for marker in markers}
    assert set(counts.values()) == {1}, f"edit counts after reconvergence: {counts}"


def burst(pair: Pair, tag: str, count: int) -> list[str]:
    """``count`` edits on A, each a new line in its own cell; returns their markers."""
    markers = []
    for index in range(count):
        marker = f"{tag}-{index}-{os.urandom(3).hex()}"
        edit_cell(pair.a_file, 1 + index, marker)
        markers.append(marker)
        time.sleep(EDIT_GAP_S)
    return markers


def test_kill_9_at_random_moments_keeps_file_valid_and_edits_durable(pair: Pair) -> None:
    rng = random.Random(os.urandom(8))
    markers: list[str] = []
    with FilePoller([pair.b_file]) as poller:
        for round_ in range(RANDOM_KILLS):
            wait_until(lambda: pair.b.peers_synced(pair.b_file, 1), 30, "B synced")
            (pid,) = pair.b.daemon_pids()
            killer = threading.Timer(rng.uniform(0, KILL_WINDOW_S), kill_9, (pid,))
            killer.start()
            markers += burst(pair, f"random-kill-{round_}", EDITS_PER_BURST)
            killer.join()
            check_after_kill(pair, markers)
        converged_once(pair, markers)
    assert poller.bad == [], f"the poller read {len(poller.bad)} invalid files"
    assert poller.reads > 0


def wait_for_replacement(path: Path, inode: int, timeout: float = 10.0) -> None:
    """Spin until ``path`` is another file (the daemon's rename), as fast as Python can."""
    deadline = time.monotonic() + timeout
    while path.stat().st_ino == inode:
        if time.monotonic() > deadline:
            pytest.fail(f"{path} was not rewritten within {timeout}s")


def test_kill_9_right_after_the_file_is_replaced_duplicates_nothing(pair: Pair) -> None:
    markers: list[str] = []
    for round_ in range(TARGETED_KILLS):
        wait_until(lambda: pair.b.peers_synced(pair.b_file, 1), 30, "B synced")
        (pid,) = pair.b.daemon_pids()
        inode = pair.b_file.stat().st_ino
        markers += burst(pair, f"targeted-kill-{round_}", 1)
        wait_for_replacement(pair.b_file, inode)
        kill_9(pid)  # between the rename and whatever the daemon does next
        check_after_kill(pair, markers)
    converged_once(pair, markers)


# --- the same windows, in process: a crash injected at a precise point of a write ----------


class Crash(BaseException):
    """Stands for kill -9: nothing after it runs (BaseException: no handler catches it)."""


def joined_sources(text: str) -> list[str]:
    return ["".join(cell["source"]) for cell in json.loads(text)["cells"]]


@pytest.mark.parametrize("crash_point", ["before the rename", "after the rename"])
def test_crash_during_a_write_restarts_consistent(
    crash_point: str, tmp_path: Path, notebooks_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer's edit arrives and is being written when the daemon dies; then the user saves
    an edit of the same cell. After restart: both edits, once, where the user put them."""
    path = copy_notebook(notebooks_dir / SAMPLE, tmp_path / "analysis.ipynb")
    store = UpdateStore(tmp_path / "doc.sqlite")
    shared = SharedFile.create(path, store, THIS_DAEMON)
    update = peer_update(shared.engine, 3, "REMOTE LINE")
    shared.doc.apply_update(update)  # as the sync session does, before the daemon persists it
    shared.apply_remote(update)

    def dying_write(target: Path, data: bytes, *, unless_changed_from: Signature | None) -> None:
        if crash_point == "after the rename":
            atomic_write(target, data, unless_changed_from=unless_changed_from)
        raise Crash

    monkeypatch.setattr(file_writer, "atomic_write", dying_write)
    with pytest.raises(Crash):
        shared.write()
    monkeypatch.undo()
    store.close()

    restarted = SharedFile.restore(path, UpdateStore(tmp_path / "doc.sqlite"), THIS_DAEMON)
    assert restarted.catch_up() is None  # nothing new: the file was the doc's, old or new
    assert "REMOTE LINE" in path.read_text()
    save = render_with_line(path.read_text(), 3, "USER LINE", last=True)
    path.write_text(save)
    restarted.read_and_ingest()
    result = restarted.engine.render()
    assert result.count("REMOTE LINE") == 1 and result.count("USER LINE") == 1
    assert joined_sources(result) == joined_sources(save)
    restarted.store.close()
