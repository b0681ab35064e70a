"""JupyterLab on two machines through the daemons: real Jupyter servers with
jupyter-collaboration beside real loopback daemons, tabs played by pycrdt websocket clients.

Each test runs two daemon homes (A shares, B joins) and one Jupyter server per home, its root
being that home's work folder; the p2prtc extension is enabled by the config the package
installs, exactly as for a user.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from daemons import Node, edit_cell, read_notebook
from jupyter_servers import MACHINE_NAMES, Machines, Tab, open_tab, two_machines, until

pytestmark = pytest.mark.slow

NOTEBOOK = "lists.ipynb"
OTHER_NOTEBOOK = "preface.ipynb"


@contextlib.asynccontextmanager
async def two_tabs(machines: Machines) -> AsyncIterator[tuple[Tab, Tab]]:
    """A tab on the shared notebook on each machine."""
    async with (
        open_tab(machines.a.address, machines.pair.a_file.name) as tab_a,
        open_tab(machines.b.address, machines.pair.b_file.name) as tab_b,
    ):
        yield tab_a, tab_b


@pytest.fixture
def machines(tmp_path: Path, notebooks_dir: Path) -> Iterator[Machines]:
    """The two machines, A having shared NOTEBOOK and B joined it."""
    with two_machines(tmp_path, notebooks_dir / NOTEBOOK) as pair_of_machines:
        yield pair_of_machines


def rooms_of(node: Node, path: Path) -> list[str]:
    """The live rooms ``p2prtc status --json`` lists for the share of ``path``."""
    for share in node.status()["shares"]:
        if share["path"] == str(path):
            return list(share["rooms"])
    return []


async def wait_for_rooms(node: Node, path: Path, count: int, what: str) -> None:
    """Until ``p2prtc status`` lists ``count`` rooms for ``path`` (asked on a thread: the
    tabs keep running)."""
    deadline = time.monotonic() + 20
    while len(await asyncio.to_thread(rooms_of, node, path)) != count:
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def joined_sources(path: Path) -> list[str]:
    return ["".join(cell["source"]) for cell in read_notebook(path)["cells"]]


def assert_only_typed(original: Path, edited: Path, typed: dict[int, str]) -> None:
    """``edited`` is ``original`` plus the text typed at the end of the given cells, once."""
    expected, actual = read_notebook(original), read_notebook(edited)
    for cell in [*expected["cells"], *actual["cells"]]:
        cell["source"] = "".join(cell["source"])
    for index, text in typed.items():
        expected["cells"][index]["source"] += text
    assert actual == expected


def ends_with(index: int, text: str) -> Any:
    return lambda tab: tab.source(index).endswith(text)


async def test_a_keystroke_in_one_tab_arrives_in_the_other_machines_tab(
    machines: Machines, notebooks_dir: Path
) -> None:
    a_file, b_file = machines.pair.a_file, machines.pair.b_file
    async with two_tabs(machines) as (tab_a, tab_b):
        assert tab_a.content() == tab_b.content()
        assert len(rooms_of(machines.pair.a, a_file)) == len(rooms_of(machines.pair.b, b_file)) == 1
        # Awareness: who is in the room on the other machine, and which machine that is.
        await tab_a.announce("Ada")
        await tab_b.announce("Bob")
        ada, bob = f"Ada ({MACHINE_NAMES[0]})", f"Bob ({MACHINE_NAMES[1]})"
        await tab_b.wait_for(lambda t: ada in t.collaborators(), what="A's user on B")
        await tab_a.wait_for(lambda t: bob in t.collaborators(), what="B's user on A")
        tab_a.type(0, "typed on A")
        await tab_b.wait_for(ends_with(0, "typed on A"), what="A's typing in B's tab")
        tab_b.type(1, "typed on B")
        await tab_a.wait_for(ends_with(1, "typed on B"), what="B's typing in A's tab")
        await until(
            lambda: (
                machines.pair.converged_with("typed on B") and "typed on A" in a_file.read_text()
            ),
            what="both files to hold both edits",
        )
    typed = {0: "typed on A", 1: "typed on B"}
    assert_only_typed(notebooks_dir / NOTEBOOK, a_file, typed)
    assert_only_typed(notebooks_dir / NOTEBOOK, b_file, typed)
    # The tabs are closed: once Jupyter drops the rooms, the daemons list none.
    await wait_for_rooms(machines.pair.a, a_file, 0, "A's room gone from status")
    await wait_for_rooms(machines.pair.b, b_file, 0, "B's room gone from status")


async def type_fragments(tab: Tab, cell: int, prefix: str, count: int) -> list[str]:
    fragments = [f"<{prefix}{i:02d}>" for i in range(count)]
    for fragment in fragments:
        tab.type(cell, fragment)
        await asyncio.sleep(0.01)
    return fragments


async def test_both_tabs_type_into_one_cell_while_an_editor_saves_nothing_lost_or_doubled(
    machines: Machines, notebooks_dir: Path
) -> None:
    cell = 2
    a_file, b_file = machines.pair.a_file, machines.pair.b_file
    async with two_tabs(machines) as (tab_a, tab_b):

        async def editor_saves() -> list[str]:
            lines = []
            for i in range(3):
                await asyncio.sleep(0.15)
                lines.append(f"# saved by an editor {i}")
                await asyncio.to_thread(edit_cell, a_file, cell, lines[-1])
            return lines

        typed_a, typed_b, edited = await asyncio.gather(
            type_fragments(tab_a, cell, "A", 40),
            type_fragments(tab_b, cell, "B", 40),
            editor_saves(),
        )
        everything = [*typed_a, *typed_b, *edited]

        def holds_everything(tab: Tab) -> bool:
            return all(piece in tab.source(cell) for piece in everything)

        await tab_a.wait_for(holds_everything, what="everything in A's tab")
        await tab_b.wait_for(holds_everything, what="everything in B's tab")
        await until(
            lambda: (
                a_file.read_bytes() == b_file.read_bytes()
                and all(piece in joined_sources(a_file)[cell] for piece in everything)
            ),
            what="both files identical, holding everything",
        )
        for source in (tab_a.source(cell), tab_b.source(cell), joined_sources(a_file)[cell]):
            assert all(source.count(piece) == 1 for piece in everything), source
        assert tab_a.content() == tab_b.content()
    sources = joined_sources(a_file)
    original = joined_sources(notebooks_dir / NOTEBOOK)
    assert sources[:cell] + sources[cell + 1 :] == original[:cell] + original[cell + 1 :]


async def test_a_daemon_killed_and_restarted_under_an_open_room(
    machines: Machines, notebooks_dir: Path
) -> None:
    a_file, b_file = machines.pair.a_file, machines.pair.b_file
    async with two_tabs(machines) as (tab_a, tab_b):
        await asyncio.to_thread(machines.pair.b.kill)
        tab_b.type(0, "typed on B while its daemon was down")
        tab_a.type(1, "typed on A meanwhile")
        await asyncio.sleep(0.3)  # the room keeps working: nothing to wait for
        await asyncio.to_thread(machines.pair.b.start)
        await tab_a.wait_for(ends_with(0, "while its daemon was down"), what="B's typing")
        await tab_b.wait_for(ends_with(1, "typed on A meanwhile"), what="A's typing")
        await wait_for_rooms(machines.pair.b, b_file, 1, "B's room re-attached")
        tab_b.type(2, "typed on B after")
        await tab_a.wait_for(ends_with(2, "typed on B after"), what="B's typing after")
        await until(
            lambda: machines.pair.converged_with("typed on B after"), what="both files converged"
        )
    typed = {0: "typed on B while its daemon was down", 1: "typed on A meanwhile"}
    assert_only_typed(notebooks_dir / NOTEBOOK, a_file, {**typed, 2: "typed on B after"})


async def test_a_room_of_an_unshared_file_is_stock_and_a_share_made_later_attaches_it(
    machines: Machines, notebooks_dir: Path
) -> None:
    a = machines.pair.a
    other = a.workdir / OTHER_NOTEBOOK
    shutil.copyfile(notebooks_dir / OTHER_NOTEBOOK, other)
    async with open_tab(machines.a.address, other.name) as tab:
        tab.type(0, "saved by Jupyter itself")
        # Stock jupyter-collaboration saves the room after its 1 s delay.
        await until(lambda: "saved by Jupyter itself" in joined_sources(other)[0], what="save")
        assert [s["path"] for s in a.status()["shares"]] == [str(machines.pair.a_file)]
        await asyncio.to_thread(a.share, other)
        await wait_for_rooms(a, other, 1, "the room attached to the share")
        tab.type(1, "typed once shared")
        await until(lambda: "typed once shared" in joined_sources(other)[1], what="daemon write")
        await asyncio.sleep(0.5)  # a replaced room shows up as cells deleted and re-added
        expected = joined_sources(notebooks_dir / OTHER_NOTEBOOK)
        expected[0] += "saved by Jupyter itself"
        expected[1] += "typed once shared"
        assert joined_sources(other) == expected
        assert len(tab.content()["cells"]) == len(read_notebook(other)["cells"])
        await asyncio.to_thread(a.run, "leave", str(other))
        tab.type(2, "saved by Jupyter after leaving")
        await until(
            lambda: "saved by Jupyter after leaving" in joined_sources(other)[2],
            what="Jupyter saving the file again",
        )
