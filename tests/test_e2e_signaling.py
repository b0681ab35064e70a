"""Two daemons that cannot find each other on the LAN meet through a real signaling relay.

mDNS is off and no peer address is given: the only way to meet is the relay process on
127.0.0.1; WebRTC then connects directly (host candidates on loopback).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from daemons import (
    LOOPBACK_ENV,
    SAMPLE,
    Node,
    cell_source,
    copy_notebook,
    read_notebook,
    wait_until,
    write_like_jupyter,
)

pytestmark = pytest.mark.timeout(180)


def test_share_and_join_through_signaling_only(
    tmp_path: Path, notebooks_dir: Path, signaling_server: str
) -> None:
    env = {**LOOPBACK_ENV, "P2PRTC_SIGNAL": signaling_server}
    nodes = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        nodes.append(Node(tmp_path / name / "home", tmp_path / name, dict(env)))
    a, b = nodes
    notebook = copy_notebook(notebooks_dir / SAMPLE, a.workdir / "remote.ipynb")
    try:
        code = a.share(notebook)
        joined = Path(b.join(code)["path"])
        assert joined.read_bytes() == notebook.read_bytes()

        nb = read_notebook(joined)
        nb["cells"][3]["source"].insert(0, "through the relay\n")
        write_like_jupyter(joined, nb)
        wait_until(lambda: "through the relay" in cell_source(notebook, 3), what="B's edit on A")

        status = b.status()
        assert status["daemon"]["signaling"] == [{"url": signaling_server, "connected": True}]
        (share,) = status["shares"]
        assert [peer["path_type"] for peer in share["peers"]] == ["host"]
    finally:
        for node in nodes:
            node.shut_down()
