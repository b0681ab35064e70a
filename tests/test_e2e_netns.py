"""End to end on three "machines": real daemons in three network namespaces on one bridge.

Each daemon runs inside its own namespace (every ``p2prtc`` command goes through
``ip netns exec``), with its own home, mDNS on and confined to its 10.77.0.x address: the
daemons find each other by mDNS on the test's bridge, as on a LAN, and connect over WebRTC
between those addresses. Nothing reaches the root namespace's interfaces.

The loopback-only variant (static peers, no mDNS) is tests/test_e2e_loopback.py.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
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
    netns_nodes,
    read_notebook,
    wait_until,
)

# mDNS discovery plus a WebRTC link take seconds.
SYNC_TIMEOUT_S = 25.0
# After B's crash, A and C may keep their link to the dead B until ICE consent gives up
# (~30 s) and refuse the restarted B's new links meanwhile (the tie-break between two links
# to one peer can keep the dead one); B must still converge, just later.
RESTART_TIMEOUT_S = 50.0

pytestmark = [pytest.mark.netns, pytest.mark.timeout(150)]


@dataclass(frozen=True)
class Edit:
    """One line added to one cell, first line (prepend) or last."""

    cell: int
    text: str
    prepend: bool = True

    def apply(self, path: Path) -> None:
        edit_cell(path, self.cell, self.text, prepend=self.prepend)

    def undo(self, source: str) -> str:
        return source.replace(f"{self.text}\n" if self.prepend else f"\n{self.text}", "", 1)

    def is_in(self, path: Path) -> bool:
        return self.text in cell_source(path, self.cell)


C_FIRST = Edit(4, "# C: first edit")
A_WHILE_B_DOWN = Edit(10, "# A: while B is down")
C_WHILE_B_DOWN = Edit(22, "# C: while B is down", prepend=False)
B_OFFLINE = Edit(61, "# B: offline edit")
EDITS = (C_FIRST, A_WHILE_B_DOWN, C_WHILE_B_DOWN, B_OFFLINE)


@dataclass
class Machines:
    a: Node
    b: Node
    c: Node
    notebook: Path  # A's copy, to share

    def path_on(self, node: Node) -> Path:
        return node.workdir / self.notebook.name

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """``wait_until``, failing with the tails of the three daemons' logs."""
        try:
            wait_until(predicate, timeout, what)
        except pytest.fail.Exception as exc:
            logs = (
                f"--- {node.home.name}\n{node.log_tail(25)}" for node in (self.a, self.b, self.c)
            )
            pytest.fail("\n".join([str(exc), *logs]))


@pytest.fixture
def machines(tmp_path: Path, notebooks_dir: Path) -> Iterator[Machines]:
    """Three namespaces A, B, C; a daemon home and a work folder for each (no daemon yet)."""
    with netns_nodes(tmp_path, "abc") as (_, (a, b, c)):
        notebook = copy_notebook(notebooks_dir / SAMPLE, a.workdir / "numpy.ipynb")
        yield Machines(a, b, c, notebook)


def identical(*paths: Path) -> bool:
    first, *others = (path.read_bytes() for path in paths)
    return all(other == first for other in others)


def without_edits(nb: dict[str, Any]) -> list[dict[str, Any]]:
    """The cells with joined sources and every edit taken out again."""
    cells = [{**cell, "source": "".join(cell["source"])} for cell in nb["cells"]]
    for edit in EDITS:
        cells[edit.cell]["source"] = edit.undo(cells[edit.cell]["source"])
    return cells


def wait_for_edit(edit: Edit, machines: Machines, *paths: Path) -> None:
    for path in paths:
        machines.wait_until(
            functools.partial(edit.is_in, path), SYNC_TIMEOUT_S, f"{edit.text!r} in {path}"
        )


def test_three_machines_share_edit_crash_and_converge(machines: Machines) -> None:
    a, b, c = machines.a, machines.b, machines.c
    on_a, on_b, on_c = machines.notebook, machines.path_on(b), machines.path_on(c)
    original = on_a.read_bytes()

    # A shares; B joins with the share's code, C with a second code from `invite`.
    code_b = a.share(on_a)
    assert b.join(code_b, on_b)["path"] == str(on_b)
    code_c = a.json("invite", str(on_a))["code"]
    assert code_c != code_b
    assert c.join(code_c, on_c)["path"] == str(on_c)
    assert on_b.read_bytes() == original
    assert on_c.read_bytes() == original

    # An editor's save on C reaches A and B.
    C_FIRST.apply(on_c)
    wait_for_edit(C_FIRST, machines, on_a, on_b)
    machines.wait_until(lambda: identical(on_a, on_b, on_c), SYNC_TIMEOUT_S, "identical files")
    machines.wait_until(lambda: a.peers_synced(on_a, 2), SYNC_TIMEOUT_S, "A: B and C synced")
    (share,) = a.status()["shares"]
    assert share["synced"] is True
    assert {peer["id"] for peer in share["peers"]} == {
        b.status()["daemon"]["id"],
        c.status()["daemon"]["id"],
    }
    assert sorted(peer["address"].split(":")[0] for peer in share["peers"]) == [
        "10.77.0.2",
        "10.77.0.3",
    ]

    # B's daemon dies without a word; A and C go on editing; B's user edits the file anyway.
    b.kill()
    A_WHILE_B_DOWN.apply(on_a)
    C_WHILE_B_DOWN.apply(on_c)
    wait_for_edit(A_WHILE_B_DOWN, machines, on_c)
    wait_for_edit(C_WHILE_B_DOWN, machines, on_a)
    B_OFFLINE.apply(on_b)
    b.start()

    def converged() -> bool:
        paths = (on_a, on_b, on_c)
        return identical(*paths) and all(edit.is_in(path) for path in paths for edit in EDITS)

    machines.wait_until(converged, RESTART_TIMEOUT_S, "all three to converge")
    text = on_a.read_text()
    for edit in EDITS:
        assert text.count(edit.text) == 1, edit.text
    # Nothing else changed anywhere in the notebook.
    assert without_edits(read_notebook(on_a)) == without_edits(json.loads(original))


def test_a_member_removed_while_offline_finds_out_on_the_lan(
    tmp_path: Path, notebooks_dir: Path
) -> None:
    """mDNS: A announces the tag of the secret it rotated away, so B, removed while its
    daemon was stopped, finds A when it comes back, only to be told it was removed."""
    with netns_nodes(tmp_path, "ab") as (_, (a, b)):
        notebook = copy_notebook(notebooks_dir / SAMPLE, a.workdir / "numpy.ipynb")
        b_file = Path(b.join(a.share(notebook))["path"])
        b_id = b.status()["daemon"]["id"]
        wait_until(lambda: a.peers_synced(notebook, 1), SYNC_TIMEOUT_S, "A synced with B")
        b.stop()
        assert a.json("remove", str(notebook), b_id)["not_reached"] == []
        edit_cell(b_file, 3, "# B: offline, after its removal")
        b.start()
        wait_until(
            lambda: b.status()["shares"][0]["standing"] == "removed",
            SYNC_TIMEOUT_S,
            "B told by A that it was removed",
        )
        assert "you were removed from this share" in b.run("status").stdout
        assert "# B: offline, after its removal" not in cell_source(notebook, 3)


def test_a_lan_join_tells_where_it_searched_and_found_the_sharer(
    tmp_path: Path, notebooks_dir: Path
) -> None:
    """Issue 13, on a LAN: the interfaces mDNS runs on, the sharer's address; a code nobody
    offers fails with what was tried and the one setting that would help."""
    with netns_nodes(tmp_path, "ab") as (_, (a, b)):
        notebook = copy_notebook(notebooks_dir / SAMPLE, a.workdir / "numpy.ipynb")
        code = a.share(notebook)
        a_address, b_address = a.env["P2PRTC_INTERFACES"], b.env["P2PRTC_INTERFACES"]

        lines = b.run("join", code, "--timeout", str(SYNC_TIMEOUT_S)).stdout.splitlines()

        assert lines[0] == f"searching: mDNS on {b_address}; relays: none; peers: none"
        assert lines[1].startswith(f"found a daemon at {a_address}:")
        assert lines[-1] == f"joined: {b.workdir / 'numpy.ipynb'} (28.2 kB, synced)"
        nobody = b.run("join", "4242-" + code.partition("-")[2], "--timeout", "1", check=False)
        assert nobody.returncode == 4
        assert nobody.stderr.startswith(
            "p2prtc: No daemon offering this join code was found (tried for 1 s:"
            f" mDNS on {b_address}; relays: none; peers: none; hint: from another network,"
        )


def test_a_daemon_started_before_its_lan_address_finds_the_sharer_once_it_has_one(
    tmp_path: Path, notebooks_dir: Path
) -> None:
    """A laptop's daemon starts at login, before the network hands it an address: mDNS
    cannot start then, and the daemon says why; it tries again, so a join works once the
    address is there, without restarting anything."""
    with netns_nodes(tmp_path, "ab") as (lab, (a, b)):
        notebook = copy_notebook(notebooks_dir / SAMPLE, a.workdir / "numpy.ipynb")
        code = a.share(notebook)
        del b.env["P2PRTC_INTERFACES"]  # the daemon finds its addresses itself, as by default
        lab.set_address(lab.nodes[1], present=False)
        b.start()
        wait_until(
            lambda: "mDNS" in (b.status()["daemon"]["mdns_error"] or ""),
            SYNC_TIMEOUT_S,
            "B's daemon to report that mDNS could not start",
        )

        lab.set_address(lab.nodes[1], present=True)
        wait_until(
            lambda: b.status()["daemon"]["mdns_error"] is None,
            SYNC_TIMEOUT_S,
            "B's daemon to start mDNS once it has its address",
        )

        joined = Path(b.join(code)["path"])
        assert joined.read_text() == notebook.read_text()
