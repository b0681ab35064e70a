"""Ten "machines": real daemons in ten network namespaces on one bridge, found by mDNS.

One daemon shares a notebook with a code good for nine joins; the nine others join at once.
Then an editor's save on one machine must reach all the others. The time from that save to
the last machine's file holding the edit is printed (it goes in docs/reliability.md, "Scale";
no assert on it), with the connections each daemon holds (status --json peers).

Run twice: with the default connection bound (P2PRTC_MAX_PEERS=8: ten daemons form a full
mesh, 9 connections each), and with a bound of 2, where daemons hold fewer connections and
an edit reaches some machines only through relays (gossip over a partial mesh). With that
bound a daemon accepts at most 4 connections (one more from a newcomer: a member with no
link to the share yet) and refuses more (TooManyPeers): the refused joiners try other
members, and the refusing one again about 2 s later; a full one sheds a settled link for a
newcomer (docs/reliability.md, "Connection bound"), so a late joiner is never locked out.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from daemons import (
    SAMPLE,
    Node,
    cell_source,
    copy_notebook,
    edit_cell,
    linked_peers,
    mesh_is_connected,
    netns_nodes,
    wait_until,
)

from p2prtc.core.mesh import member_bound

MACHINES = 10
SYNC_TIMEOUT_S = 40.0
EDITED_CELL = 3

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]


@dataclass
class Lab:
    nodes: list[Node]
    notebook: Path  # the sharer's copy

    def path_on(self, node: Node) -> Path:
        return node.workdir / self.notebook.name

    def logs(self) -> str:
        return "\n".join(f"--- {node.home.name} ---\n{node.log_tail(15)}" for node in self.nodes)


@pytest.fixture
def lab(tmp_path: Path, notebooks_dir: Path, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """MACHINES namespaces, each with a daemon home and a work folder (no daemon yet)."""
    max_peers: int = request.param
    names = [f"m{index}" for index in range(MACHINES)]
    with netns_nodes(tmp_path, names, {"P2PRTC_MAX_PEERS": str(max_peers)}) as (_, nodes):
        notebook = copy_notebook(notebooks_dir / SAMPLE, nodes[0].workdir / "scale.ipynb")
        yield Lab(nodes, notebook)


def statuses(lab: Lab) -> list[dict[str, Any]]:
    """`status --json` of every daemon (in parallel: each is a CLI process)."""
    with ThreadPoolExecutor(len(lab.nodes)) as pool:
        return list(pool.map(Node.status, lab.nodes))


@pytest.mark.parametrize(
    "lab",
    [
        pytest.param(8, id="max-peers-8"),
        pytest.param(2, id="max-peers-2"),
    ],
    indirect=True,
)
def test_ten_machines_join_and_one_edit_reaches_all(lab: Lab) -> None:
    sharer, *joiners = lab.nodes
    original = lab.notebook.read_bytes()

    started = time.perf_counter()
    code = sharer.share(lab.notebook, "--uses", str(len(joiners)))
    with ThreadPoolExecutor(len(joiners)) as pool:
        joined = list(pool.map(lambda node: node.join(code, lab.path_on(node)), joiners))
    join_s = time.perf_counter() - started
    assert [result["path"] for result in joined] == [str(lab.path_on(n)) for n in joiners]
    for node in joiners:
        assert lab.path_on(node).read_bytes() == original

    wait_until(
        lambda: mesh_is_connected(statuses(lab)), SYNC_TIMEOUT_S, f"a connected mesh\n{lab.logs()}"
    )
    editor = joiners[-1]
    line = f"# scale: edit from {editor.home.name}"
    saved = time.perf_counter()
    edit_cell(lab.path_on(editor), EDITED_CELL, line)
    arrived: dict[str, float] = {}

    def everywhere() -> bool:
        for node in lab.nodes:
            if node.home.name not in arrived and line in cell_source(
                lab.path_on(node), EDITED_CELL
            ):
                arrived[node.home.name] = time.perf_counter() - saved
        return len(arrived) == len(lab.nodes)

    wait_until(everywhere, SYNC_TIMEOUT_S, f"the edit on every machine\n{lab.logs()}")
    for node in lab.nodes:
        assert cell_source(lab.path_on(node), EDITED_CELL).count(line) == 1
    wait_until(
        lambda: len({lab.path_on(node).read_bytes() for node in lab.nodes}) == 1,
        SYNC_TIMEOUT_S,
        "identical files",
    )

    counts = sorted(len(linked_peers(status)) for status in statuses(lab))
    max_peers = int(sharer.env["P2PRTC_MAX_PEERS"])
    others = sorted(t for name, t in arrived.items() if name != editor.home.name)
    print(
        f"\n[scale] {MACHINES} daemons, P2PRTC_MAX_PEERS={max_peers}: "
        f"share + {len(joiners)} parallel joins {join_s:.1f} s; "
        f"edit reached all {len(others)} others in {others[-1] * 1000:.0f} ms "
        f"(median {others[len(others) // 2] * 1000:.0f} ms); "
        f"connections per daemon {counts} (mean {sum(counts) / MACHINES:.1f})"
    )
    # A daemon dials up to max_peers and accepts up to twice that, plus one newcomer (and
    # sheds a link rather than go past that for the next one).
    assert counts[-1] <= member_bound(max_peers, joining=True), f"connections per daemon {counts}"
