"""Members of a share: listing them, and removing one so it cannot reconnect."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from daemons import (
    SAMPLE,
    Node,
    cell_source,
    copy_notebook,
    edit_cell,
    join_directly,
    loopback_nodes,
    synced_pair,
    wait_until,
)
from idle_pipes import IdlePipes

from p2prtc.core.mesh import MAX_PER_SOURCE

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def trio(tmp_path: Path, notebooks_dir: Path) -> Iterator[tuple[Node, Node, Node, Path]]:
    a, b, c = loopback_nodes(tmp_path, "a", "b", "c")
    notebook = copy_notebook(notebooks_dir / SAMPLE, a.workdir / "team.ipynb")
    try:
        yield a, b, c, notebook
    finally:
        for node in (a, b, c):
            node.shut_down()


def test_removed_member_cannot_reconnect_and_others_keep_syncing(
    trio: tuple[Node, Node, Node, Path],
) -> None:
    a, b, c, notebook = trio
    code = a.share(notebook, "--uses", "2")
    port = a.status()["daemon"]["rendezvous_port"]
    for joiner in (b, c):
        joiner.env["P2PRTC_PEERS"] = f"127.0.0.1:{port}"
    b_file = Path(b.join(code)["path"])
    c_file = Path(c.join(code)["path"])
    wait_until(lambda: a.peers_synced(notebook, 2), what="A synced with B and C")

    members = a.json("members", str(notebook))["members"]
    c_id = c.status()["daemon"]["id"]
    assert {m["id"] for m in members} == {
        a.status()["daemon"]["id"],
        b.status()["daemon"]["id"],
        c_id,
    }

    removed = a.json("remove", str(notebook), c_id[:6])
    assert removed["removed"] == c_id
    assert c_id not in [m["id"] for m in a.json("members", str(notebook))["members"]]
    # C was connected: it is told, instead of seeing its peers go quiet.
    wait_until(lambda: standing(c) == "removed", what="C told it was removed")
    assert "you were removed from this share" in c.run("status").stdout

    # C restarts: it still knows (a removed daemon that dials anyway is refused: see
    # test_members_offline_during_a_removal_are_told_when_they_come_back).
    c.stop()
    c.start()
    assert standing(c) == "removed"
    edit_cell(notebook, 2, "after the removal")
    wait_until(lambda: "after the removal" in cell_source(b_file, 2), what="A's edit on B")
    edit_cell(c_file, 4, "from the removed member")
    edit_cell(b_file, 6, "B still syncs")
    wait_until(lambda: "B still syncs" in cell_source(notebook, 6), what="B's edit on A")
    assert "from the removed member" not in cell_source(notebook, 4)
    assert "after the removal" not in cell_source(c_file, 2)
    (share,) = a.status()["shares"]
    assert c_id not in [peer["id"] for peer in share["peers"]]

    # B got the new secret over its connection: it reconnects after a restart.
    b.stop()
    b.start()
    edit_cell(notebook, 8, "B reconnected with the new secret")
    wait_until(
        lambda: "B reconnected with the new secret" in cell_source(b_file, 8),
        30,
        what="A's edit on B after B's restart",
    )


def standing(node: Node) -> str:
    (share,) = node.status()["shares"]
    return str(share["standing"])


def test_the_other_side_is_told_when_a_member_leaves_or_is_removed(
    tmp_path: Path, notebooks_dir: Path
) -> None:
    with synced_pair(tmp_path / "leaving", notebooks_dir / SAMPLE) as pair:
        assert standing(pair.b) == "member"
        pair.a.run("leave", str(pair.a_file))
        wait_until(lambda: standing(pair.b) == "alone", what="B told that A left")
        assert "no members left" in pair.b.run("status").stdout
    with synced_pair(tmp_path / "removing", notebooks_dir / SAMPLE) as pair:
        pair.a.run("remove", str(pair.a_file), daemon_id(pair.b))
        wait_until(lambda: standing(pair.b) == "removed", what="B told it was removed")
        assert standing(pair.a) == "alone"
        assert "no members left" in pair.a.run("status").stdout
        pair.b.stop()
        pair.b.start()  # what it was told is kept
        assert standing(pair.b) == "removed"
        assert "you were removed from this share" in pair.b.run("status").stdout


def test_members_offline_during_a_removal_are_told_when_they_come_back(
    trio: tuple[Node, Node, Node, Path],
) -> None:
    a, b, c, notebook = trio
    code = a.share(notebook, "--uses", "2")
    b_file, c_file = (join_directly(a, joiner, notebook, code) for joiner in (b, c))
    b_id, c_id = daemon_id(b), daemon_id(c)
    b.stop()
    c.stop()
    removed = a.json("remove", str(notebook), c_id)
    assert removed["not_reached"] == [b_id]
    edit_cell(b_file, 2, "edited on B while offline")
    edit_cell(c_file, 4, "edited on C while offline")
    for node in (b, c):
        node.start()  # each dials A with the secret A rotated away
    # Only A can tell them, and only after their handshake with the old secret.
    wait_until(lambda: standing(c) == "removed", what="C told it was removed")
    wait_until(lambda: standing(b) == "outdated", what="B told it missed the rotation")
    assert "you were removed from this share" in c.run("status").stdout
    assert "secret was rotated while this daemon was offline" in b.run("status").stdout
    for edit, line in (("edited on B", 2), ("edited on C", 4)):
        assert edit not in cell_source(notebook, line)  # they got nothing in, nor out
    (share,) = a.status()["shares"]
    assert share["peers"] == []


def key_state(node: Node) -> tuple[int, str, list[str]]:
    """The share's generation, secret and member list as ``node`` persisted them."""
    (record_file,) = (node.home / "shares").glob("*/share.json")
    record = json.loads(record_file.read_text())
    return record["generation"], record["secret"], sorted(record["members"])


def daemon_id(node: Node) -> str:
    return str(node.status()["daemon"]["id"])


def peers_of_share(node: Node) -> set[str]:
    (share,) = node.status()["shares"]
    return {peer["id"] for peer in share["peers"] if peer["connected"]}


@pytest.fixture
def quartet(tmp_path: Path, notebooks_dir: Path) -> Iterator[tuple[list[Node], list[Path]]]:
    """A shares; B, C and D joined (each dials A): four daemons, four files."""
    nodes = loopback_nodes(tmp_path, "a", "b", "c", "d")
    a = nodes[0]
    notebook = copy_notebook(notebooks_dir / SAMPLE, a.workdir / "team.ipynb")
    try:
        files = [notebook]
        code = a.share(notebook, "--uses", "3")
        files += [join_directly(a, joiner, notebook, code) for joiner in nodes[1:]]
        wait_until(lambda: a.peers_synced(notebook, 3), what="A synced with B, C and D")
        yield nodes, files
    finally:
        for node in nodes:
            node.shut_down()


def test_a_member_who_joined_after_a_removal_can_remove_too(
    quartet: tuple[list[Node], list[Path]],
) -> None:
    """Issue 10: the welcome carries the current generation, so a later member's own removal
    rotates above it and every remaining member takes it (it used to be ignored silently,
    leaving the removed member connected and the share split at the next reconnection)."""
    (a, b, c, d), (notebook, b_file, _, d_file) = quartet
    a.json("remove", str(notebook), daemon_id(c))
    wait_until(lambda: key_state(b)[0] == key_state(d)[0] == 1, what="B and D at generation 1")
    # E joins now: its welcome says generation 1.
    e = loopback_nodes(notebook.parent.parent.parent, "e")[0]
    try:
        e_file = join_directly(a, e, notebook, str(a.json("invite", str(notebook))["code"]))
        assert key_state(e)[:2] == key_state(a)[:2]
        answer = e.json("remove", str(e_file), daemon_id(b))
        assert answer["removed"] == daemon_id(b)
        remaining = [a, d, e]
        wait_until(lambda: len({key_state(n)[:2] for n in remaining}) == 1, what="one secret left")
        generation, secret, members = key_state(a)
        assert generation == 2
        assert members == sorted(daemon_id(n) for n in remaining)
        assert key_state(b)[1] != secret  # B keeps only the old secret
        wait_until(lambda: daemon_id(b) not in peers_of_share(a), what="A dropped B")
        edit_cell(e_file, 3, "E edits after removing B")
        wait_until(lambda: "E edits after removing B" in cell_source(d_file, 3), what="E -> D")
        assert "E edits after removing B" not in cell_source(b_file, 3)
    finally:
        e.shut_down()


def test_concurrent_removals_converge_to_one_secret(
    quartet: tuple[list[Node], list[Path]],
) -> None:
    """A removes C while D removes B: A and D end on one secret without B and C, and the
    share keeps syncing between them."""
    (a, b, c, d), (notebook, _, _, d_file) = quartet
    with ThreadPoolExecutor(2) as pool:
        results = list(
            pool.map(
                lambda job: job[0].run("remove", str(job[1]), daemon_id(job[2]), "--json"),
                [(a, notebook, c), (d, d_file, b)],
            )
        )
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    wait_until(lambda: key_state(a) == key_state(d), what="A and D on one key state")
    _, secret, members = key_state(a)
    assert members == sorted([daemon_id(a), daemon_id(d)])
    assert secret not in (key_state(b)[1], key_state(c)[1])
    edit_cell(notebook, 5, "A after the removals")
    wait_until(lambda: "A after the removals" in cell_source(d_file, 5), what="A -> D")
    wait_until(
        lambda: peers_of_share(a) == {daemon_id(d)} and peers_of_share(d) == {daemon_id(a)},
        what="B and C dropped",
    )


def test_a_daemon_of_another_share_cannot_take_a_members_id(
    tmp_path: Path, notebooks_dir: Path
) -> None:
    """Issue 10: E copies member B's daemon id and joins another notebook of A's. Its
    connection claims B's id with a share B's link does not carry: A refuses it and keeps
    its link to B (it used to drop B's link for E's, again and again)."""
    with synced_pair(tmp_path, notebooks_dir / SAMPLE) as pair:
        a, b = pair.a, pair.b
        (e,) = loopback_nodes(tmp_path, "e")
        e.home.mkdir(parents=True)
        shutil.copy(b.home / "identity.json", e.home / "identity.json")
        other = copy_notebook(notebooks_dir / SAMPLE, a.workdir / "other.ipynb")
        code = a.share(other)
        e.env["P2PRTC_PEERS"] = f"127.0.0.1:{a.status()['daemon']['rendezvous_port']}"
        log_start = len((a.home / "daemon.log").read_text())
        try:
            result = e.run("join", code, "--timeout", "3", check=False)
            assert result.returncode != 0  # it cannot sync under a stolen id
            wait_until(
                lambda: (
                    "refused a connection claiming to be"
                    in (a.home / "daemon.log").read_text()[log_start:]
                ),
                what="A refusing E's claim",
            )
        finally:
            e.shut_down()
        a_log = (a.home / "daemon.log").read_text()[log_start:]
        # The only connections to "B" that closed are E's refused ones.
        b_id = daemon_id(b)  # log lines name a peer "<name> (<id>)"
        closed = sum(f"({b_id}): open -> closed" in line for line in a_log.splitlines())
        assert closed == a_log.count("refused a connection claiming to be"), a_log
        edit_cell(pair.b_file, 2, "B is still connected")
        wait_until(lambda: "B is still connected" in cell_source(pair.a_file, 2), what="B -> A")


def test_idle_unauthenticated_pipes_do_not_keep_members_apart(
    tmp_path: Path, notebooks_dir: Path
) -> None:
    """Issue 10: 50 pipes that open as a member and never send HELLO used to hold every
    connection slot; now they get a few handshake slots of their own and B, restarted
    meanwhile, reconnects and syncs."""
    with synced_pair(tmp_path, notebooks_dir / SAMPLE) as pair:
        port = int(pair.a.status()["daemon"]["rendezvous_port"])
        with IdlePipes(port, 50) as neighbour:
            wait_until(lambda: neighbour.opened >= 50, what="50 idle pipes open")
            pair.b.stop()
            pair.b.start()
            edit_cell(pair.b_file, 3, "B through the crowd")
            wait_until(lambda: "B through the crowd" in cell_source(pair.a_file, 3), what="B -> A")
        assert 0 < neighbour.accepted_at_once <= MAX_PER_SOURCE
