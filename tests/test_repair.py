"""core.repair on bare pycrdt docs: moves made the way JupyterLab makes them (delete plus
insert of a copy), by clients that know nothing of p2prtc, repaired the same on every peer."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pycrdt import Doc, Map, Text

from p2prtc.core.model import cells_of, moves_of
from p2prtc.core.repair import (
    CellCopy,
    Shown,
    cell_copies,
    cell_item,
    missing_spans,
    record_move,
    repair_cells,
)


def cell(cell_id: str, source: str) -> Map[Any]:
    return Map({"id": cell_id, "cell_type": "code", "source": Text(source), "metadata": Map()})


def shared_docs(count: int) -> list[Doc[Any]]:
    first: Doc[Any] = Doc()
    cells_of(first).extend([cell(f"c{i}", f"#c{i}\nline {i}\n") for i in range(4)])
    docs = [first]
    for _ in range(count - 1):
        docs.append(Doc())
        docs[-1].apply_update(first.get_update())
    return docs


def observed(doc: Doc[Any], change: Any) -> bytes:
    updates: list[bytes] = []
    subscription = doc.observe(lambda event: updates.append(event.update))
    change()
    doc.unobserve(subscription)
    return updates[0]


def foreign_move(doc: Doc[Any], source: int, target: int) -> bytes:
    """A move as JupyterLab makes it: the cell deleted, a copy of it inserted."""

    def move() -> None:
        cells = cells_of(doc)
        copy = cells[source].to_py()
        with doc.transaction():
            del cells[source]
            cells.insert(target, cell(copy["id"], copy["source"]))

    return observed(doc, move)


def type_into(doc: Doc[Any], index: int, at: int, text: str) -> bytes:
    source = cells_of(doc)[index]["source"]
    return observed(doc, lambda: source.insert(at, text))


def sources(doc: Doc[Any]) -> list[tuple[str, str]]:
    return [(copy.cell_id, copy.source) for copy in cell_copies(doc)]


def test_typing_into_a_cell_another_client_moves_is_transplanted_once() -> None:
    typist, mover, third = shared_docs(3)
    typed = type_into(typist, 1, len("#c1\n"), "typed\n")
    shown = Shown.of(typist)  # what the typist's file showed before the move came
    moved = foreign_move(mover, 1, 3)
    for doc, update in ((typist, moved), (mover, typed), (third, moved), (third, typed)):
        doc.apply_update(update)
    assert "typed" not in str(sources(typist))  # the typing went with the deleted original

    repair = repair_cells(typist, shown)
    assert repair is not None
    for doc in (mover, third):
        doc.apply_update(repair)

    for doc in (typist, mover, third):
        assert sources(doc)[3] == ("c1", "#c1\ntyped\nline 1\n")
        assert [cell_id for cell_id, _ in sources(doc)] == ["c0", "c2", "c3", "c1"]


def test_two_peers_that_both_showed_the_typing_transplant_the_same_item() -> None:
    typist, mover, other = shared_docs(3)
    typed = type_into(typist, 1, 0, "typed\n")
    other.apply_update(typed)
    moved = foreign_move(mover, 1, 0)
    shown = {id(doc): Shown.of(doc) for doc in (typist, other)}
    repairs = []
    for doc in (typist, other):
        doc.apply_update(moved)
        repairs.append(repair_cells(doc, shown[id(doc)]))

    first, second = repairs
    assert first is not None and second is not None
    typist.apply_update(second)
    other.apply_update(first)
    mover.apply_update(typed)
    mover.apply_update(first)
    mover.apply_update(second)
    for doc in (typist, other, mover):
        assert sources(doc)[0] == ("c1", "typed\n#c1\nline 1\n")


def test_a_cell_moved_by_two_clients_is_kept_once_with_both_edits() -> None:
    left, right = shared_docs(2)
    updates = [foreign_move(left, 2, 0), foreign_move(right, 2, 3)]
    updates.append(type_into(left, 0, len("#c2\n"), "from left\n"))
    updates.append(type_into(right, 3, len("#c2\nline 2\n"), "from right\n"))
    left.apply_update(updates[1])
    left.apply_update(updates[3])
    right.apply_update(updates[0])
    right.apply_update(updates[2])

    repairs = [repair_cells(doc, Shown([])) for doc in (left, right)]
    for doc in (left, right):
        for repair in repairs:
            assert repair is not None
            doc.apply_update(repair)

    assert sources(left) == sources(right)
    kept = [source for cell_id, source in sources(left) if cell_id == "c2"]
    assert kept == ["#c2\nfrom left\nline 2\nfrom right\n"]


def test_a_cell_deleted_while_typed_into_stays_deleted() -> None:
    typist, deleter = shared_docs(2)
    shown = Shown.of(typist)
    typed = type_into(typist, 1, 0, "typed\n")
    deleted = observed(deleter, lambda: cells_of(deleter).__delitem__(1))
    typist.apply_update(deleted)
    deleter.apply_update(typed)

    assert repair_cells(typist, shown) is None
    assert [cell_id for cell_id, _ in sources(typist)] == ["c0", "c2", "c3"]
    assert sources(typist) == sources(deleter)


def test_no_repair_while_an_update_waits_for_one_it_builds_on() -> None:
    """yrs shows the insertions of an update that came too early but holds back its
    deletions: a moved cell then looks doubled until the missing update arrives."""
    mover, late = shared_docs(2)
    first = foreign_move(mover, 0, 2)
    second = foreign_move(mover, 2, 0)
    late.apply_update(second)
    assert [cell_id for cell_id, _ in sources(late)].count("c0") == 2

    assert repair_cells(late, Shown([])) is None

    late.apply_update(first)
    assert repair_cells(late, Shown([])) is None
    assert sources(late) == sources(mover)


@pytest.mark.parametrize(
    ("now", "before", "repaired"),
    [
        ("a\nb\n", "a\nnew\nb\n", "a\nnew\nb\n"),
        ("x.sum()", "x.sum() # A", "x.sum() # A"),  # a line extended: only the addition
        ("a", "a\nb", "a\nb"),  # after a last line without newline
        ("", "abc", "abc"),
        ("#c1\n<t2>\n<t3>", "#c1\n<t102>\n<t2>", "#c1\n<t102>\n<t2>\n<t3>"),  # lines, not chars
        ("a\nb\nc", "a\nc", "a\nb\nc"),  # only insertions: what the copy has stays
        ("#c1\nnew\nold", "#c1new\n", "#c1\nnew\nold"),  # the copy holds the glued line
        ("#c1new\n", "#c1\nnew\nold", "#c1\nnew\nold"),  # the copy has it glued: unglued
    ],
)
def test_missing_spans(now: str, before: str, repaired: str) -> None:
    result = now
    for at, start, size in sorted(missing_spans(now, before), reverse=True):
        result = result[:at] + before[start : start + size] + result[at:]
    assert result == repaired


def test_missing_lines_do_not_start_inside_a_line_of_the_copy() -> None:
    """Each missing line is its own item, all at their span's place: Yjs may order items
    at one place either way, so a span that ends a line inside the copy's line and starts
    another ("08>\n<t100" into "<t1>") may come out "<t1<t10008>\n>" (soak seed 524)."""
    now, before = "#c0\n<t1>", "#c0\n<t108>\n<t100>"
    pieces = [before[start : start + size] for _, start, size in missing_spans(now, before)]
    assert pieces == ["08", "\n<t100>"]


def test_cell_copies_name_the_map_items() -> None:
    doc = shared_docs(1)[0]
    copies = cell_copies(doc)
    assert len({copy.item for copy in copies}) == 4
    assert all(isinstance(copy, CellCopy) for copy in copies)


def transplant_both(left: Doc[Any], right: Doc[Any], left_shows: str, right_shows: str) -> None:
    """Two peers repair cell c1, a moved copy, against what their files showed of it, and
    exchange the repairs."""
    gone = (1, 10**6)  # the Map item the cell had in the files: deleted by the move
    repairs = [
        repair_cells(doc, Shown([("c1", shows)], items=[gone]))
        for doc, shows in ((left, left_shows), (right, right_shows))
    ]
    assert repairs[0] is not None and repairs[1] is not None
    left.apply_update(repairs[1])
    right.apply_update(repairs[0])


def drop_doubled(left: Doc[Any], right: Doc[Any]) -> None:
    """The left peer drops a doubled line, the right one gets that and drops nothing more."""
    dropped = repair_cells(left, Shown([]))
    assert dropped is not None
    right.apply_update(dropped)
    assert repair_cells(right, Shown([])) is None  # the same extra copy was already dropped
    assert sources(left) == sources(right)


def test_a_line_two_peers_transplanted_at_different_places_ends_once() -> None:
    """Peers that saw different parts of a moved cell place its missing line differently."""
    left, right = shared_docs(2)
    transplant_both(left, right, "#c1\nTYPED\nline 1\n", "#c1\nline 1\nTYPED\n")
    assert [source.count("TYPED") for _, source in sources(left)] == [0, 2, 0, 0]

    drop_doubled(left, right)

    assert sources(left)[1][1].count("TYPED") == 1


def docs_with_cell(count: int, source: str, creator: int = 1) -> list[Doc[Any]]:
    """``count`` peers sharing one doc whose cell 1 (of three) holds ``source``, made by
    client ``creator`` (transplants hash their neighbours' ids: a fixed one replays)."""
    first: Doc[Any] = Doc(client_id=creator)
    cells_of(first).extend([cell("c0", "#c0\n"), cell("c1", source), cell("c2", "#c2\n")])
    docs = [first]
    for _ in range(count - 1):
        docs.append(Doc())
        docs[-1].apply_update(first.get_update())
    return docs


def delete_from(doc: Doc[Any], index: int, start: int, stop: int) -> bytes:
    source = cells_of(doc)[index]["source"]
    return observed(doc, lambda: source.__delitem__(slice(start, stop)))


def exchange(docs: list[Doc[Any]], updates: list[bytes]) -> None:
    """Every doc gets every update (each repair it makes goes to all, until none is made)."""
    pending = list(updates)
    while pending:
        update = pending.pop(0)
        for doc in docs:
            doc.apply_update(update)
            repair = repair_cells(doc, Shown([]))
            if repair is not None:
                pending.append(repair)


def test_a_glued_line_the_moved_copy_holds_whole_is_not_transplanted() -> None:
    """A line typed above the last one while a peer deletes that last line merges glued to
    the line before ("#c1new"): the deleted newline was its left neighbour. A peer showing
    the glued line finds each of its characters in a copy moved before the deletion: nothing
    is missing there (found by the soak, seeds 478 and 621: the line came out twice)."""
    typist, deleter, mover, viewer = docs_with_cell(4, "#c1\nold")
    typed = type_into(typist, 1, len("#c1\n"), "new\n")
    deleted = delete_from(deleter, 1, len("#c1"), len("#c1\nold"))
    for doc, update in ((mover, typed), (viewer, typed), (viewer, deleted)):
        doc.apply_update(update)
    assert sources(viewer)[1] == ("c1", "#c1new\n")
    shown = Shown.of(viewer)
    moved = foreign_move(mover, 1, 2)
    viewer.apply_update(moved)

    repair = repair_cells(viewer, shown)

    assert repair is None
    exchange([typist, deleter, mover, viewer], [typed, deleted, moved])
    assert sources(viewer)[2] == ("c1", "#c1\nnew\nold")
    assert len({str(sources(doc)) for doc in (typist, deleter, mover, viewer)}) == 1


def test_a_moved_copy_of_a_glued_line_gains_the_characters_it_lacks_not_lines() -> None:
    """The other way round: the mover copied the glued line ("#c1new"), a peer shows the
    two lines it was. The copy lacks only a newline and the deleted last line: those
    characters go in, not the whole first line before the glued one (found by the soak,
    seeds 3026 and 4629: the cell's first line came out twice)."""
    typist, deleter, mover, viewer = docs_with_cell(4, "#c1\nold")
    typed = type_into(typist, 1, len("#c1\n"), "new\n")
    deleted = delete_from(deleter, 1, len("#c1"), len("#c1\nold"))
    for doc, update in ((mover, typed), (mover, deleted), (viewer, typed)):
        doc.apply_update(update)
    shown = Shown.of(viewer)
    moved = foreign_move(mover, 1, 2)
    viewer.apply_update(moved)

    repair = repair_cells(viewer, shown)

    assert repair is not None
    exchange([typist, deleter, mover, viewer], [typed, deleted, moved, repair])
    assert len({str(sources(doc)) for doc in (typist, deleter, mover, viewer)}) == 1
    kept = sources(viewer)[2]
    assert kept[0] == "c1" and kept[1].count("#c1") == 1 and kept[1].count("new") == 1


def test_a_new_line_like_one_deleted_in_a_moved_cell_is_transplanted_whole() -> None:
    """A types <t101> below <t1>, then deletes <t1>; B, which saw neither, moves the cell
    (p2prtc's move: it records what its copy was made from) and deletes <t1> in its copy.
    A's file shows "#c1\n<t101>" against the copy's "#c1\n<t1>": <t101> looks like <t1>
    extended, and "01" went into the copy's <t1>, which B's deletion then took, leaving
    "#c101" (soak seed 835). The record says B never saw any of <t101>: a new line."""
    typist, mover = docs_with_cell(2, "#c1\n<t1>")
    typed = type_into(typist, 1, len("#c1\n<t1>"), "\n<t101>")
    gone = delete_from(typist, 1, len("#c1\n"), len("#c1\n<t1>\n"))
    shown = Shown(sources(typist), state=typist.get_update())
    seen = mover.get_state()
    moved = foreign_move(mover, 1, 2)
    recorded = observed(mover, lambda: record_move(mover, 2, seen, (0, 0)))
    trimmed = delete_from(mover, 2, len("#c1"), len("#c1\n<t1>"))
    typist.apply_update(moved)
    typist.apply_update(recorded)

    repair = repair_cells(typist, shown)

    assert repair is not None
    exchange([typist, mover], [typed, gone, moved, recorded, trimmed, repair])
    assert sources(typist) == sources(mover)
    copy = sources(typist)[2]
    assert copy[0] == "c1" and copy[1].count("<t101>") == 1
    assert "01" not in copy[1].replace("<t101>", "")  # no piece of it glued elsewhere


def test_a_transplant_glued_to_a_line_that_another_transplant_brought_whole_goes() -> None:
    """Two peers show one typed line differently: whole, and glued to the line before it (a
    peer deleted the newline after that line). Each transplants it into a copy moved
    before the typing: one as a line, one glued. The glued one goes, the same on every
    peer (found by the soak, seeds 566 and 620: the line came out twice)."""
    typist, deleter, mover, glued, whole = docs_with_cell(5, "#c1\nkeep\nold")
    typed = type_into(typist, 1, len("#c1\nkeep\n"), "new\n")
    deleted = delete_from(deleter, 1, len("#c1\nkeep"), len("#c1\nkeep\nold"))
    moved = foreign_move(mover, 1, 2)
    for doc, update in ((glued, typed), (glued, deleted), (whole, typed)):
        doc.apply_update(update)
    assert sources(glued)[1] == ("c1", "#c1\nkeepnew\n")
    shown = {id(doc): Shown.of(doc) for doc in (glued, whole)}
    repairs = []
    for doc in (glued, whole):
        doc.apply_update(moved)
        repair = repair_cells(doc, shown[id(doc)])
        assert repair is not None
        repairs.append(repair)

    exchange([typist, deleter, mover, glued, whole], [typed, deleted, moved, *repairs])

    assert len({str(sources(doc)) for doc in (typist, deleter, mover, glued, whole)}) == 1
    assert sources(glued)[2][1].count("new") == 1


@pytest.mark.parametrize(
    ("creator", "doubled"), [(1, "#c1\nTYPEDTYPED\n"), (2, "#c1\nTYPED\nTYPED")]
)
def test_a_line_two_transplants_glued_into_one_line_ends_once(creator: int, doubled: str) -> None:
    """Two peers showed a moved cell's missing last line with and without a newline: Yjs
    puts the two transplants side by side, in an order the item ids decide: the line twice
    on one line ("TYPEDTYPED"), or on two. One copy goes, the same on every peer (found by
    the soak, seed 1776)."""
    left, right = docs_with_cell(2, "#c1\n", creator)
    transplant_both(left, right, "#c1\nTYPED", "#c1\nTYPED\n")
    assert sources(left)[1][1] == doubled

    drop_doubled(left, right)

    assert sources(left)[1][1].count("TYPED") == 1


def p2prtc_move(doc: Doc[Any], source: int, target: int) -> bytes:
    """A move as p2prtc's ingest makes it: the copy records what it was made from."""
    seen = doc.get_state()

    def move() -> None:
        cells = cells_of(doc)
        made_from = cell_item(cells, source)
        copy = cells[source].to_py()
        with doc.transaction():
            del cells[source]
            cells.insert(target, cell(copy["id"], copy["source"]))
            record_move(doc, target, seen, made_from)

    return observed(doc, move)


def peers_with_clients(source: str, *clients: int) -> list[Doc[Any]]:
    """Peers with fixed client ids (which copy a repair keeps depends on them), sharing
    the doc of ``docs_with_cell``."""
    shared = docs_with_cell(1, source)[0].get_update()
    docs = [Doc(client_id=client) for client in clients]
    for doc in docs:
        doc.apply_update(shared)
    return docs


def test_peers_that_know_different_moves_of_a_cell_keep_the_same_branch() -> None:
    """P moves c1 (copy B), Q moves B on (copy C), R moves the original (copy D), with
    B < D < C by item. Q, which sees C and D, and R, which sees B and D but not C, each keep
    one copy. By item alone Q kept D and R kept B: D went at R, C at Q, B with Q's move, and
    the cell was gone everywhere (long stale runs, seeds 192, 287, 493). C ranks as B, the
    copy it was made from: both keep that branch."""
    p, r, q = peers_with_clients("#c1\n", 1, 2, 3)
    first = p2prtc_move(p, 1, 2)
    q.apply_update(first)
    onward = p2prtc_move(q, 2, 0)
    other = p2prtc_move(r, 1, 0)
    q.apply_update(other)
    kept_by_q = repair_cells(q, Shown([]))
    r.apply_update(first)
    kept_by_r = repair_cells(r, Shown([]))
    assert kept_by_q is not None and kept_by_r is not None

    exchange([p, q, r], [first, onward, other, kept_by_q, kept_by_r])

    assert sources(p) == sources(q) == sources(r)
    assert [cell_id for cell_id, _ in sources(p)].count("c1") == 1


def test_a_line_typed_into_the_copy_a_repair_drops_goes_in_whole() -> None:
    """Two peers move one cell; the copy that goes gets a line typed into it ("<t121>"),
    and a peer deletes the line "<t1>" of the copy that stays. A repair that sees both
    copies but not the deletion extended "<t1>" with "21", which the deletion left glued to
    the first line: "#c021", the cell's first line garbled (seed 265). The typed line was
    never in the kept copy: it goes in whole."""
    keeper, other, typist, deleter, repairer = peers_with_clients("#c1\n<t1>", 1, 2, 3, 4, 5)
    kept = p2prtc_move(keeper, 1, 2)
    trimmed = delete_from(other, 1, len("#c1"), len("#c1\n<t1>"))
    dropped = p2prtc_move(other, 1, 0)
    typist.apply_update(trimmed)
    typist.apply_update(dropped)
    typed = type_into(typist, 0, len("#c1"), "\n<t121>")
    deleter.apply_update(kept)
    deleted = delete_from(deleter, 2, len("#c1"), len("#c1\n<t1>"))
    for update in (kept, trimmed, dropped, typed):
        repairer.apply_update(update)
    repair = repair_cells(repairer, Shown([]))
    assert repair is not None

    peers = [keeper, other, typist, deleter, repairer]
    exchange(peers, [kept, trimmed, dropped, typed, deleted, repair])

    assert len({str(sources(doc)) for doc in peers}) == 1
    (copy,) = [source for cell_id, source in sources(repairer) if cell_id == "c1"]
    # (The deletion of "\n<t1>" may glue the line to the first one: "#c1<t121>".)
    assert re.match(r"#c1(?!\d)", copy) and copy.count("<t121>") == 1


def test_a_move_record_that_does_not_parse_is_ignored() -> None:
    """A peer's doc is input: a record that is not "<state vector hex> <client>:<clock>"
    ranks the copy by its item alone, and the repair goes on."""
    left, right = shared_docs(2)
    moved_left = foreign_move(left, 1, 3)
    moved_right = foreign_move(right, 1, 0)
    right.apply_update(moved_left)
    copy = next(c for c in cell_copies(right) if c.cell_id == "c1")
    moves_of(right)[f"{copy.item[0]}:{copy.item[1]}"] = "zz not:a:record"
    left.apply_update(moved_right)

    assert repair_cells(right, Shown([])) is not None
    assert [cell_id for cell_id, _ in sources(right)].count("c1") == 1
