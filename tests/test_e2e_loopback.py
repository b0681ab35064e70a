"""End to end on one machine: two real daemons with two homes, driven through the CLI.

Loopback only: mDNS is off (it would bind the machine's real interfaces), the joiner dials
the sharer's rendezvous port directly (P2PRTC_PEERS), and ICE gathers on 127.0.0.1 only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemons import (
    SAMPLE,
    Node,
    cell_source,
    copy_notebook,
    edit_cell,
    loopback_nodes,
    wait_until,
    write_like_jupyter,
)
from joins import another_code

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def pair(tmp_path: Path, notebooks_dir: Path) -> Iterator[tuple[Node, Node, Path]]:
    """A sharer A (notebook shared) and a joiner B that knows A's rendezvous address."""
    a, b = loopback_nodes(tmp_path, "a", "b")
    notebook = copy_notebook(notebooks_dir / SAMPLE, a.workdir / "analysis.ipynb")
    try:
        yield a, b, notebook
    finally:
        for node in (a, b):
            node.shut_down()


def connect(a: Node, b: Node) -> None:
    """Point B's daemon at A's rendezvous listener (A's daemon must be running)."""
    port = a.status()["daemon"]["rendezvous_port"]
    b.env["P2PRTC_PEERS"] = f"127.0.0.1:{port}"


def invite_b(pair: tuple[Node, Node, Path]) -> str:
    """A shares its notebook and B will dial A: the code for B."""
    a, b, notebook = pair
    code = a.share(notebook)
    connect(a, b)
    return code


def share_and_join(a: Node, b: Node, notebook: Path) -> Path:
    code = a.share(notebook)
    connect(a, b)
    answer = b.join(code)
    return Path(answer["path"])


def test_share_join_and_edit_both_ways(pair: tuple[Node, Node, Path]) -> None:
    a, b, notebook = pair
    joined = share_and_join(a, b, notebook)

    assert joined == b.workdir / "analysis.ipynb"
    assert joined.read_bytes() == notebook.read_bytes()

    edit_cell(notebook, 3, "edited on A")
    wait_until(lambda: "edited on A" in cell_source(joined, 3), what="A's edit on B")
    edit_cell(joined, 5, "edited on B")
    wait_until(lambda: "edited on B" in cell_source(notebook, 5), what="B's edit on A")
    wait_until(lambda: notebook.read_bytes() == joined.read_bytes(), what="identical files")


def test_concurrent_edits_to_one_cell_merge(pair: tuple[Node, Node, Path]) -> None:
    a, b, notebook = pair
    joined = share_and_join(a, b, notebook)

    edit_cell(notebook, 7, "first line from A")
    edit_cell(joined, 7, "last line from B", prepend=False)

    def merged() -> bool:
        source = cell_source(notebook, 7)
        return "first line from A" in source and "last line from B" in source

    wait_until(merged, what="both edits in A's cell")
    wait_until(lambda: notebook.read_bytes() == joined.read_bytes(), what="identical files")
    final = cell_source(joined, 7)
    assert final.count("first line from A") == 1
    assert final.count("last line from B") == 1


def test_status_shows_peer_and_sync_state(pair: tuple[Node, Node, Path]) -> None:
    a, b, notebook = pair
    share_and_join(a, b, notebook)

    wait_until(lambda: a.peers_synced(notebook, 1), what="A to see B synced")
    status = a.status()
    (share,) = status["shares"]
    assert share["path"] == str(notebook)
    assert share["state"] == "active"
    assert share["synced"] is True
    (peer,) = share["peers"]
    assert peer["id"] == b.status()["daemon"]["id"]
    assert peer["address"].startswith("127.0.0.1:")
    assert peer["connected"] is True
    assert peer["path_type"] == "host"
    assert status["daemon"]["pid"] > 0


def test_wrong_code_fails_clearly_and_joins_nothing(pair: tuple[Node, Node, Path]) -> None:
    a, b, notebook = pair
    code = a.share(notebook)
    connect(a, b)
    result = b.run("join", another_code(code), "--timeout", "15", check=False)

    assert result.returncode == 4
    assert result.stderr.strip() == "p2prtc: The join code is wrong."
    assert not (b.workdir / notebook.name).exists()
    (invitation,) = a.status()["shares"][0]["invitations"]
    assert invitation["wrong_attempts_left"] == 2
    # The real code still works after a wrong guess.
    assert b.join(code)["path"] == str(b.workdir / notebook.name)


def test_used_code_is_refused(pair: tuple[Node, Node, Path], tmp_path: Path) -> None:
    a, b, notebook = pair
    code = a.share(notebook)
    connect(a, b)
    b.join(code)
    third = Node(tmp_path / "c" / "home", b.workdir, dict(b.env))
    try:
        result = third.run("join", code, str(tmp_path / "c.ipynb"), "--timeout", "3", check=False)
    finally:
        third.shut_down()
    assert result.returncode == 4
    assert "already been used" in result.stderr


def test_join_keeps_a_different_file_and_the_force_retry_takes_the_same_code(
    pair: tuple[Node, Node, Path],
) -> None:
    _, b, notebook = pair
    code = invite_b(pair)  # one use only
    existing = b.workdir / "mine.ipynb"
    existing.write_text("my own work")

    result = b.run("join", code, str(existing), check=False)

    assert result.returncode == 5
    assert result.stderr.startswith("p2prtc: The destination file exists and differs; pass --force")
    assert existing.read_text() == "my own work"
    assert b.status()["shares"] == []
    # The sharer counted the code as used; this daemon kept what it received for the retry.
    answer = b.join(code, existing, "--force")
    assert answer["path"] == str(existing) and not answer["adopted"]
    assert existing.read_bytes() == notebook.read_bytes()


def test_join_adopts_a_file_that_holds_the_notebook_already(
    pair: tuple[Node, Node, Path],
) -> None:
    _, b, notebook = pair
    code = invite_b(pair)
    copy = b.workdir / "copy.ipynb"
    reformatted = json.dumps(json.loads(notebook.read_text()), indent=2) + "\n"
    copy.write_text(reformatted)  # the same notebook, saved by another editor

    answer = b.join(code, copy)

    assert answer["adopted"]
    assert json.loads(copy.read_text()) == json.loads(notebook.read_text())
    assert b.status()["shares"][0]["path"] == str(copy)


def test_join_into_a_missing_folder_fails_before_anything(
    pair: tuple[Node, Node, Path],
) -> None:
    _, b, notebook = pair
    code = invite_b(pair)

    result = b.run("join", code, str(b.workdir / "no-such-folder" / "x.ipynb"), check=False)

    assert result.returncode == 2
    assert result.stderr.startswith("p2prtc: Invalid value for 'DEST': the folder ")
    assert result.stderr.strip().endswith("does not exist (see p2prtc join -h)")
    assert not b.home.exists()  # no daemon started
    assert b.join(code)["path"] == str(b.workdir / notebook.name)  # the code is unspent


def test_invalid_save_is_reported_and_not_propagated(pair: tuple[Node, Node, Path]) -> None:
    a, b, notebook = pair
    joined = share_and_join(a, b, notebook)
    good = joined.read_bytes()

    notebook.write_text('{"cells": [ truncated')
    wait_until(lambda: a.status()["shares"][0]["last_error"], what="A to report the bad file")
    assert "not a valid Jupyter notebook" in a.status()["shares"][0]["last_error"]
    assert joined.read_bytes() == good

    nb = json.loads(good)
    nb["cells"][2]["source"].insert(0, "fixed on A\n")
    write_like_jupyter(notebook, nb)
    wait_until(lambda: "fixed on A" in cell_source(joined, 2), what="the fixed save on B")
    assert a.status()["shares"][0]["last_error"] is None


def test_offline_edits_merge_after_restart(pair: tuple[Node, Node, Path]) -> None:
    a, b, notebook = pair
    joined = share_and_join(a, b, notebook)
    wait_until(lambda: b.peers_synced(joined, 1), what="B synced")

    b.stop()
    edit_cell(joined, 4, "B edited while its daemon was stopped")
    edit_cell(notebook, 9, "A edited meanwhile")
    b.start()

    def both_everywhere() -> bool:
        return all(
            "B edited while its daemon was stopped" in cell_source(path, 4)
            and "A edited meanwhile" in cell_source(path, 9)
            for path in (notebook, joined)
        )

    wait_until(both_everywhere, 30, what="both offline edits on both sides")
    wait_until(lambda: notebook.read_bytes() == joined.read_bytes(), what="identical files")
