"""Two shares between the same two daemons travel over one WebRTC connection.

The first share's member handshake sets the connection up (through the rendezvous pipe);
the second is proven over the data channel itself (AUTH frames, daemon/share_auth.py).
Real daemons on loopback.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from daemons import (
    SAMPLE,
    cell_source,
    copy_notebook,
    edit_cell,
    loopback_nodes,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)


def test_a_second_share_joins_the_open_connection_and_syncs(
    tmp_path: Path, notebooks_dir: Path
) -> None:
    a, b = loopback_nodes(tmp_path, "a", "b")
    first = copy_notebook(notebooks_dir / SAMPLE, a.workdir / "first.ipynb")
    second = copy_notebook(notebooks_dir / "preface.ipynb", a.workdir / "second.ipynb")
    try:
        codes = [a.share(first), a.share(second)]
        b.env["P2PRTC_PEERS"] = f"127.0.0.1:{a.status()['daemon']['rendezvous_port']}"
        b_first = Path(b.join(codes[0])["path"])
        wait_until(lambda: b.peers_synced(b_first, 1), what="the first share synced")
        b_second = Path(b.join(codes[1])["path"])
        wait_until(lambda: a.peers_synced(second, 1), what="the second share synced on A")

        edit_cell(second, 0, "over the same connection")
        wait_until(
            lambda: "over the same connection" in cell_source(b_second, 0),
            what="A's edit of the second notebook on B",
        )
        peers = {s["path"]: s["peers"] for s in a.status()["shares"]}
        (to_b_first,) = peers[str(first)]
        (to_b_second,) = peers[str(second)]
        assert to_b_first["id"] == to_b_second["id"] == b.status()["daemon"]["id"]
        assert to_b_first["address"] == to_b_second["address"]  # one link, not two
        assert b_second.read_bytes() == second.read_bytes()
    finally:
        for node in (b, a):
            node.shut_down()
