"""The daemon's doc entering a Jupyter room's doc (p2prtc/jupyter/shared_doc.py), without a
Jupyter server: the room is its YNotebook over a pycrdt Doc, as jupyter_server_ydoc builds it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jupyter_ydoc import YNotebook
from nbgen import code_cell, markdown_cell, notebook
from pycrdt import Doc

from p2prtc.jupyter.shared_doc import merge_daemon_part

NOTEBOOK = notebook(
    [markdown_cell("# Title", cell_id="m1"), code_cell("x = 1", cell_id="c1")],
    metadata={"kernelspec": {"display_name": "Python 3", "language": "python", "name": "p3"}},
)
PATH = Path("/work/nb.ipynb")


def room_of(doc: Doc[Any]) -> Any:
    """The attributes of a DocumentRoom that the merge uses."""
    return SimpleNamespace(ydoc=doc, _document=YNotebook(doc), room_id="json:notebook:1")


def loaded(client_id: int) -> YNotebook:
    """NOTEBOOK loaded from its file into a doc of its own (its own history)."""
    document = YNotebook(Doc(client_id=client_id))
    document.set(NOTEBOOK)
    return document


def type_into(document: YNotebook, index: int, text: str) -> None:
    source = document._ycells[index]["source"]
    source += text


def merge(room: Any, daemon: YNotebook, *, replaces_own: bool) -> None:
    missing = daemon.ydoc.get_update(room.ydoc.get_state())
    with room.ydoc.transaction():
        merge_daemon_part(room, missing, PATH, replaces_own=replaces_own)


# Both orders of client ids: which side's map entry Y keeps for a key both set depends on it.
@pytest.mark.parametrize(("room_client", "daemon_client"), [(7, 3), (3, 7)])
def test_a_stock_room_gives_way_to_the_daemons_doc_nothing_doubled(
    room_client: int, daemon_client: int
) -> None:
    room, daemon = room_of(loaded(room_client).ydoc), loaded(daemon_client)
    merge(room, daemon, replaces_own=True)
    assert room._document.get() == daemon.get()
    assert [cell["id"] for cell in room._document.get()["cells"]] == ["m1", "c1"]
    # The daemon takes the room's history in turn: its file keeps the notebook's metadata.
    daemon.ydoc.apply_update(room.ydoc.get_update(daemon.ydoc.get_state()))
    assert daemon.get() == room._document.get()
    assert daemon.get()["metadata"]["kernelspec"]["name"] == "p3"


def test_after_the_takeover_both_sides_edit_one_history() -> None:
    room, daemon = room_of(loaded(7).ydoc), loaded(3)
    merge(room, daemon, replaces_own=True)
    type_into(daemon, 1, "  # daemon")
    room.ydoc.apply_update(daemon.ydoc.get_update(room.ydoc.get_state()))
    assert room._document.get()["cells"][1]["source"] == "x = 1  # daemon"


def test_a_room_attached_before_keeps_what_was_typed_while_the_daemon_was_away() -> None:
    daemon = loaded(3)
    room = room_of(Doc(client_id=7))
    merge(room, daemon, replaces_own=True)
    type_into(room._document, 0, " typed here")
    type_into(daemon, 1, " + 1")
    merge(room, daemon, replaces_own=False)
    sources = [cell["source"] for cell in room._document.get()["cells"]]
    assert sources == ["# Title typed here", "x = 1 + 1"]


def test_the_rooms_local_path_never_enters_the_shared_state() -> None:
    room, daemon = room_of(Doc(client_id=7)), loaded(3)
    room._document.path = str(PATH)
    merge(room, daemon, replaces_own=True)
    assert "path" not in room._document._ystate
    assert "path" not in state_at_the_daemon(daemon, room)


def state_at_the_daemon(daemon: YNotebook, room: Any) -> dict[str, Any]:
    """The state map as the daemon's doc holds it after taking the room's missing part."""
    daemon.ydoc.apply_update(room.ydoc.get_update(daemon.ydoc.get_state()))
    return dict(daemon._ystate)
