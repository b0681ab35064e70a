"""Members of a share: listing them, and removing one so it cannot reconnect."""

from __future__ import annotations

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
)

pytestmark = pytest.mark.timeout(180)

NOT_A_MEMBER = "The other daemon could not prove it is a member of this share."


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

    # C restarts and tries again with the old secret: refused.
    c.stop()
    c.start()
    edit_cell(notebook, 2, "after the removal")
    wait_until(lambda: "after the removal" in cell_source(b_file, 2), what="A's edit on B")
    c_log = len(c.log())
    edit_cell(c_file, 4, "from the removed member")
    edit_cell(b_file, 6, "B still syncs")
    wait_until(lambda: "B still syncs" in cell_source(notebook, 6), what="B's edit on A")
    # Not a sleep: C really tried again after its edit, and A refused it.
    wait_until(
        lambda: f"failed: {NOT_A_MEMBER}" in c.log(c_log), 30, "C to be refused after its edit"
    )
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
