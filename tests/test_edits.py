"""Edit stamps (core.edits): who changed which cell, and which edits were concurrent.

Sans-IO: replicas (nbgen.Replica) stand for daemons; their updates are delivered by hand,
in the orders a network may deliver them.
"""

from __future__ import annotations

import json

from nbgen import Edit, Notebook, Replica, code_cell, dump, notebook, sample_notebook
from pycrdt import Doc

from p2prtc.core.edits import (
    DELETED,
    MOVED,
    NEW,
    Concurrent,
    EditTracker,
    changed_parts,
    edits_of,
    parse_stamp,
)
from p2prtc.core.engine import NotebookEngine


def members(*names: str, nb: Notebook | None = None) -> list[Replica]:
    """A sharer and joiners that all stamp their saves."""
    sharer = Replica.sharer(names[0], dump(nb or sample_notebook()))
    state = sharer.engine.full_state()
    replicas = [sharer, *(Replica.joiner(name, state) for name in names[1:])]
    for replica in replicas:
        replica.stamps = True
        replica.engine.edits.drain()  # the shared state's stamps: none
    return replicas


def add_line(index: int, line: str) -> Edit:
    def edit(nb: Notebook) -> None:
        nb["cells"][index]["source"] = line + "\n" + nb["cells"][index]["source"]

    return edit


def save(replica: Replica, index: int, line: str) -> bytes:
    update = replica.save(add_line(index, line))
    assert update is not None
    return update


def cross(a: Replica, b: Replica, a_cell: int, b_cell: int) -> None:
    """A and B save (cells ``a_cell``, ``b_cell``) before either save reaches the other."""
    from_a, from_b = save(a, a_cell, "a line from a"), save(b, b_cell, "a line from b")
    a.receive(from_b)
    b.receive(from_a)


def cell_id(replica: Replica, index: int) -> str:
    return str(replica.engine.notebook()["cells"][index]["id"])


def concurrent_seen(replica: Replica) -> list[Concurrent]:
    return replica.engine.edits.drain()[1]


def test_a_save_stamps_the_cells_it_changed_with_its_author() -> None:
    a, b = members("alice", "bob")
    update = save(a, 2, "by alice")

    stamps, concurrent = a.engine.edits.drain()
    assert [(s.cell_id, s.member, s.n, s.parts) for s in stamps] == [
        (cell_id(a, 2), "alice", 1, ("source",))
    ]
    assert concurrent == []
    b.receive(update)
    (received,), _ = b.engine.edits.drain()
    assert (received.cell_id, received.member) == (cell_id(b, 2), "alice")


def test_edits_one_after_the_other_are_not_concurrent() -> None:
    a, b = members("alice", "bob")
    b.receive(save(a, 2, "alice first"))
    a.receive(save(b, 2, "then bob, who saw it"))
    b.receive(save(a, 2, "alice again, who saw bob's"))

    assert concurrent_seen(a) == [] and concurrent_seen(b) == []
    assert a.engine.render() == b.engine.render()


def test_edits_of_the_same_cell_made_without_seeing_each_other_are_concurrent() -> None:
    a, b = members("alice", "bob")
    cross(a, b, 2, 2)

    expected = [Concurrent(cell_id(a, 2), ("alice", "bob"))]
    assert concurrent_seen(a) == expected and concurrent_seen(b) == expected
    source = a.engine.notebook()["cells"][2]["source"]
    assert "a line from a" in source and "a line from b" in source  # the merge kept both
    assert a.engine.render() == b.engine.render()


def test_concurrent_edits_of_different_cells_are_not_reported() -> None:
    a, b = members("alice", "bob")
    cross(a, b, 2, 4)

    assert concurrent_seen(a) == [] and concurrent_seen(b) == []


def test_a_third_member_sees_the_concurrency_whatever_the_order() -> None:
    a, b, c = members("alice", "bob", "carol")
    from_a, from_b = save(a, 1, "alice"), save(b, 1, "bob")
    c.receive(from_b)
    assert concurrent_seen(c) == []  # one side only, so far
    c.receive(from_a)

    assert concurrent_seen(c) == [Concurrent(cell_id(c, 1), ("alice", "bob"))]


def test_a_save_of_a_stale_buffer_over_a_peers_edit_of_that_cell_is_concurrent() -> None:
    """Bob's editor did not reload after alice's edit reached his file: his save of the same
    cell merges both, and bob's daemon says so before any peer answers."""
    a, b = members("alice", "bob")
    b.receive(save(a, 3, "alice's line"), reload=False)
    assert concurrent_seen(b) == []
    save(b, 3, "bob's line, typed into the old buffer")

    assert concurrent_seen(b) == [Concurrent(cell_id(b, 3), ("alice", "bob"))]


def test_a_reloaded_buffer_is_not_concurrent() -> None:
    a, b = members("alice", "bob")
    b.receive(save(a, 3, "alice's line"), reload=True)
    a.receive(save(b, 3, "bob's line, after reading alice's"))

    assert concurrent_seen(a) == [] and concurrent_seen(b) == []


def test_once_both_saw_each_other_the_next_edit_is_not_concurrent_again() -> None:
    a, b = members("alice", "bob")
    cross(a, b, 2, 2)
    assert concurrent_seen(a) and concurrent_seen(b)
    b.receive(save(a, 2, "alice, having seen both"))

    assert concurrent_seen(b) == []


def test_a_move_concurrent_with_an_edit_of_the_cell_is_reported() -> None:
    a, b = members("alice", "bob")
    moved_id = cell_id(a, 2)
    from_a = a.save(lambda nb: nb["cells"].append(nb["cells"].pop(2)))
    from_b = save(b, 2, "bob's line")
    assert from_a is not None
    a.receive(from_b)
    b.receive(from_a)

    expected = [Concurrent(moved_id, ("alice", "bob"))]  # (the merge is core.repair's)
    assert concurrent_seen(a) == expected and concurrent_seen(b) == expected


def test_changed_parts_names_new_deleted_and_edited_cells() -> None:
    base = notebook([code_cell("a", cell_id="one"), code_cell("b", cell_id="two")])
    new = notebook(
        [code_cell("a", execution_count=3, cell_id="one"), code_cell("c", cell_id="three")]
    )

    assert changed_parts(base, new) == {
        "one": ("execution_count",),
        "two": (DELETED,),
        "three": (NEW,),
    }


def test_changed_parts_names_the_moved_cell_only() -> None:
    cells = [code_cell(name, cell_id=name) for name in ("a", "b", "c", "d")]
    base = notebook(cells)
    new = notebook([cells[0], cells[2], cells[3], cells[1]])  # b moved to the end

    assert changed_parts(base, new) == {"b": (MOVED,)}


def test_malformed_stamps_from_a_peer_are_ignored() -> None:
    hostile: Doc[object] = Doc()
    edits = edits_of(hostile)  # type: ignore[arg-type]
    edits["no-member"] = json.dumps({"n": 1, "at": 0})
    edits["cell x"] = "not json"
    edits["cell y"] = json.dumps({"n": "many", "at": 0})
    edits["cell z"] = 42
    edits["cell w"] = json.dumps({"n": 1, "at": 0, "saw": {"v": 1}, "pad": "x" * 5000})
    edits["cell nan"] = '{"n": 1, "at": NaN}'  # a NaN time would not fit the log's table
    edits["cell far"] = json.dumps({"n": 1, "at": 1e300})
    edits["cell zero"] = json.dumps({"n": 0, "at": 1})
    edits["cell line\nbreak"] = json.dumps({"n": 1, "at": 1})
    edits["../etc passwd"] = json.dumps({"n": 1, "at": 1})
    engine = NotebookEngine(Doc())
    engine.doc.apply_update(hostile.get_update())

    assert engine.edits.drain() == ([], [])
    stamp = parse_stamp("cell ok", json.dumps({"n": 2, "at": 1.5, "parts": ["source", "\x1b[2J"]}))
    assert stamp is not None and stamp.parts == ("source",)  # unknown parts are dropped


def test_a_tracker_opened_on_a_doc_with_stamps_reports_only_what_comes_after() -> None:
    a, b = members("alice", "bob")
    save(a, 2, "alice")
    a.receive(save(b, 2, "bob"))
    reopened = EditTracker(a.engine.doc)  # a restart: the stamps so far are the past

    assert reopened.drain() == ([], [])
    assert set(reopened.stamps(cell_id(a, 2))) == {"alice", "bob"}
