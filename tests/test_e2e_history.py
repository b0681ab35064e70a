"""`p2prtc log` and concurrent edits, end to end: two real daemons on loopback, real files.

Concurrency is made deterministic the way a user meets it: B's daemon is stopped (or frozen,
its link up) while both machines edit the same cell, so neither edit can have seen the
other; B's edit is ingested when its daemon runs again, and the two meet. Edits made one
after the other (each machine's file showing the other's edit first) must not be reported.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemons import SAMPLE, Node, Pair, cell_source, edit_cell, synced_pair, wait_until

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def pair(tmp_path: Path, notebooks_dir: Path) -> Iterator[Pair]:
    with synced_pair(tmp_path, notebooks_dir / SAMPLE) as synced:
        yield synced


def daemon_id(node: Node) -> str:
    return str(node.status()["daemon"]["id"])


def concurrent_edits(node: Node) -> list[Any]:
    (share,) = node.status()["shares"]
    return list(share["concurrent_edits"])


def log_entries(node: Node, path: Path) -> list[Any]:
    return list(node.json("log", str(path), "-n", "50")["entries"])


def logged_cells(node: Node, path: Path) -> list[tuple[str, Any]]:
    """(member, cell index) of every cell the log names, newest first."""
    entries = log_entries(node, path)
    return [(entry["member"], cell["index"]) for entry in entries for cell in entry["cells"]]


def test_log_shows_who_changed_which_cell_and_concurrent_edits_only_when_concurrent(
    pair: Pair,
) -> None:
    a_id, b_id = daemon_id(pair.a), daemon_id(pair.b)
    assert [(e["kind"], e["member"]) for e in log_entries(pair.a, pair.a_file)] == [("share", a_id)]
    assert [(e["kind"], e["member"]) for e in log_entries(pair.b, pair.b_file)] == [("join", a_id)]

    # One after the other: B edits cell 2 once A's edit of it is in B's file.
    edit_cell(pair.a_file, 2, "# A first")
    wait_until(lambda: "# A first" in cell_source(pair.b_file, 2), what="A's edit on B")
    edit_cell(pair.b_file, 2, "# then B, having seen A's")
    wait_until(lambda: pair.converged_with("# then B, having seen A's"), what="B's edit on A")
    for node, path in ((pair.a, pair.a_file), (pair.b, pair.b_file)):
        assert logged_cells(node, path)[:2] == [(b_id, 2), (a_id, 2)]
        assert concurrent_edits(node) == []

    # At the same time: both edit cell 4 while B's daemon is down.
    pair.b.stop()  # answered before the daemon is gone: it could still take A's edit
    wait_until(lambda: not pair.b.daemon_pids(), what="B's daemon gone")
    edit_cell(pair.a_file, 4, "# A, while B is offline")
    wait_until(lambda: (a_id, 4) in logged_cells(pair.a, pair.a_file), what="A's save logged")
    edit_cell(pair.b_file, 4, "# B, offline")
    pair.b.start()
    wait_until(lambda: pair.converged_with("# B, offline"), 60, what="both edits everywhere")
    assert "# A, while B is offline" in cell_source(pair.a_file, 4)  # the merge kept both

    for node, path in ((pair.a, pair.a_file), (pair.b, pair.b_file)):
        wait_until(lambda node=node: concurrent_edits(node) != [], what="concurrency reported")
        (found,) = concurrent_edits(node)
        assert (found["index"], found["members"]) == (4, sorted([a_id, b_id]))
        said = f"concurrent edits merged in cell 4 [{found['id'][:8]}] ("
        assert said in node.run("status").stdout
        assert said in node.run("log", str(path)).stdout
        assert sorted(logged_cells(node, path)[:2]) == sorted([(a_id, 4), (b_id, 4)])

    # Crossing on a live link: B's daemon frozen (SIGSTOP) while both save cell 6; A's update
    # waits in B's socket, and B's save, once B runs again, was made without it.
    frozen = pair.b.daemon_pids()
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        edit_cell(pair.a_file, 6, "# A, live")
        wait_until(lambda: (a_id, 6) in logged_cells(pair.a, pair.a_file), what="A's save")
        edit_cell(pair.b_file, 6, "# B, live")
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    wait_until(lambda: pair.converged_with("# B, live"), 60, what="both live edits everywhere")
    for node in (pair.a, pair.b):
        wait_until(lambda node=node: len(concurrent_edits(node)) == 2, what="the second one")
        assert [found["index"] for found in concurrent_edits(node)] == [6, 4]

    # A file that is not shared: one line, the "not shared" exit code.
    result = pair.a.run("log", str(pair.a_file.with_name("other.ipynb")), check=False)
    assert result.returncode == 7
    (line,) = result.stderr.splitlines()
    assert line.startswith("p2prtc: ")
