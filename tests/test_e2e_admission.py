"""A late joiner is never locked out: a listener full of links still admits a newcomer.

Real loopback daemons with ``P2PRTC_MAX_PEERS=1``: a daemon accepts 2 links, 3 with one
from a newcomer (core/mesh.py ``member_bound``). Every joiner knows only the sharer
(P2PRTC_PEERS, no mDNS), so the sharer is made full on purpose, not by chance under load.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from daemons import (
    SAMPLE,
    copy_notebook,
    join_directly,
    linked_peers,
    loopback_nodes,
    wait_until,
)

from p2prtc.core.mesh import member_bound

pytestmark = pytest.mark.timeout(180)


def test_a_late_joiner_gets_in_when_the_only_member_it_knows_is_full(
    tmp_path: Path, notebooks_dir: Path
) -> None:
    nodes = loopback_nodes(tmp_path, "a", "b", "c", "d", "late")
    for node in nodes:
        node.env["P2PRTC_MAX_PEERS"] = "1"
    sharer, *early, late = nodes
    notebook = copy_notebook(notebooks_dir / SAMPLE, sharer.workdir / "team.ipynb")
    bound = member_bound(1, joining=True)
    try:
        code = sharer.share(notebook, "--uses", str(len(early) + 1))
        for joiner in early:
            join_directly(sharer, joiner, notebook, code)
        wait_until(
            lambda: len(linked_peers(sharer.status())) == bound,
            what="the sharer full: no room for anybody",
        )

        # It used to answer TooManyPeers until the join gave up ("No member of the share
        # could be reached"). Now, once a link has settled, it sheds one for the newcomer.
        late_file = join_directly(sharer, late, notebook, code)

        assert late_file.read_bytes() == notebook.read_bytes()
        assert "to admit a newcomer" in sharer.log()
        assert len(linked_peers(sharer.status())) <= bound
    finally:
        for node in nodes:
            node.shut_down()
