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
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from daemons import (
    LOOPBACK_ENV,
    Node,
    copy_notebook,
    edit_cell,
    process_alive,
    share_and_join,
    stored_updates,
    wait_until,
)

from p2prtc.core.notebook import parse_notebook

pytestmark = pytest.mark.timeout(150)

SAMPLE = "02.02-The-Basics-Of-NumPy-Arrays.ipynb"
RANDOM_KILLS = 4
TARGETED_KILLS = 3
EDITS_PER_BURST = 4
EDIT_GAP_S = 0.03
# Kills land anywhere from before the first edit of a burst reaches B to after the last.
KILL_WINDOW_S = 0.3


@dataclass
class Pair:
    a: Node
    b: Node
    a_file: Path
    b_file: Path


@dataclass
class FilePoller:
    """Reads a file in a loop on a thread; remembers every read that was not a notebook."""

    path: Path
    reads: int = 0
    bad: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> FilePoller:
        self._thread = threading.Thread(target=self._run, name="file poller", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            problem = notebook_problem(self.path)
            self.reads += 1
            if problem is not None:
                self.bad.append(problem)


def notebook_problem(path: Path) -> str | None:
    """Why the file at ``path`` is not a valid notebook right now, None when it is."""
    try:
        data = path.read_bytes()
        json.loads(data)
        parse_notebook(data)
    except Exception as exc:  # any failure is what we report
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, notebooks_dir: Path) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("crash")
    nodes = []
    for name in ("a", "b"):
        (root / name / "work").mkdir(parents=True)
        nodes.append(Node(root / name / "home", root / name / "work", dict(LOOPBACK_ENV)))
    a, b = nodes
    a_file = copy_notebook(notebooks_dir / SAMPLE, a.workdir / "analysis.ipynb")
    try:
        yield Pair(a, b, a_file, share_and_join(a, b, a_file))
    finally:
        for node in nodes:
            node.shut_down()


def markers_in(path: Path, markers: list[str]) -> list[str]:
    text = path.read_text()
    return [marker for marker in markers if marker in text]


def kill_9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not process_alive(pid), 10, "the daemon to die")


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
    with FilePoller(pair.b_file) as poller:
        for round_ in range(RANDOM_KILLS):
            wait_until(lambda: pair.b.peers_synced(pair.b_file, 1), 30, "B synced")
            (pid,) = pair.b.daemon_pids()
            killer = threading.Timer(rng.uniform(0, KILL_WINDOW_S), kill_9, (pid,))
            killer.start()
            markers += burst(pair, f"random-kill-{round_}", EDITS_PER_BURST)
            killer.join()
            check_after_kill(pair, markers)
        wait_until(lambda: set(markers_in(pair.b_file, markers)) == set(markers), 30, "all")
    assert poller.bad == [], f"the poller read {len(poller.bad)} invalid files"
    assert poller.reads > 0
    # Nothing lost. (Exactly once is the next test's business: it aims at the one window.)
    for path in (pair.a_file, pair.b_file):
        assert markers_in(path, markers) == markers


def wait_for_replacement(path: Path, inode: int, timeout: float = 10.0) -> None:
    """Spin until ``path`` is another file (the daemon's rename), as fast as Python can."""
    deadline = time.monotonic() + timeout
    while path.stat().st_ino == inode:
        if time.monotonic() > deadline:
            pytest.fail(f"{path} was not rewritten within {timeout}s")


@pytest.mark.xfail(
    strict=True,
    reason="SharedFile.write renames the file before persisting it as the base: a crash in "
    "between leaves a file the restarted daemon does not know, which catch_up ingests as a "
    "user's save from the old base, applying its remote edits a second time",
)
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
