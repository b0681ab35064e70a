"""The versions a save may start from and the choice among them (pure: no file, no loop).

The engine's tests (tests/test_engine.py) check what the merges make of these choices; here
the parts the engine wires are checked on their own: which versions stay whole, which go to
the facts, and which one a save is taken to have started from.
"""

from __future__ import annotations

from typing import Any

from nbgen import code_cell, notebook
from pycrdt import Doc

from p2prtc.core.base_choice import Save, choose_base, closest_version
from p2prtc.core.model import load_notebook
from p2prtc.core.notebook import Notebook
from p2prtc.core.remembered import MAX_VERSIONS, RememberedVersions
from p2prtc.core.snapshot import Version


def cells(**sources: str) -> Notebook:
    """A notebook whose cells have these ids and sources, in this order."""
    return notebook([code_cell(source, cell_id=cell_id) for cell_id, source in sources.items()])


def version(number: int, nb: Notebook) -> Version:
    """Version ``number`` of the file: ``nb``, with a doc holding it."""
    doc: Doc[Any] = Doc()
    load_notebook(doc, nb)
    return Version.of_doc(number.to_bytes(16, "big"), nb, doc)


def remembered(*versions: Version) -> RememberedVersions:
    memory = RememberedVersions()
    for each in versions:
        memory.push(each)
    return memory


def test_a_cell_only_the_newer_version_has_proves_the_save_started_from_it() -> None:
    older = version(0, cells(a="x", b="y"))
    newer = version(1, cells(a="x", b="y (a peer's edit)", d="a peer's cell\nof\nlines"))
    # The user saw the peer's edit, so held the newer version, and deleted the peer's cell:
    # from the older one it would be the smaller edit, but merged against it the deletion
    # would be lost.
    save = Save(cells(a="x", b="y (a peer's edit)"))
    assert closest_version(save, [older, newer], predating=0) is newer
    # Without such a cell, the smaller edit decides.
    save = Save(cells(a="x", b="the user's edit"))
    assert closest_version(save, [older, newer], predating=0) is older


def test_a_save_forgets_its_base_and_older_but_keeps_the_versions_written_after() -> None:
    v0, v1, v2 = (version(n, cells(a=f"line {n}")) for n in range(3))
    memory = remembered(v0, v1, v2)
    saved = version(3, cells(a="line 1, edited"))
    memory.record_save(v1, saved)
    assert memory.whole == [v2, saved] and memory.latest() is saved
    # v2 was written before the save, made from v1: only a second editor may hold it.
    assert memory.predating_last_save == 1
    assert not memory.remembers(v0.digest) and not memory.remembers(v1.digest)
    assert memory.known_digests() == {v2.digest, saved.digest}


def test_versions_beyond_the_limit_are_remembered_as_facts_and_recalled_for_a_stale_save() -> None:
    written = [version(n, cells(a="a", b=f"b{n}", c=f"c{n}")) for n in range(MAX_VERSIONS + 1)]
    memory = remembered(*written)
    first = written[0]
    assert memory.version_of(first.digest) is None and memory.remembers(first.digest)
    assert len(memory.whole) == MAX_VERSIONS
    # A buffer of the first version, one cell edited: its other cells are the first's.
    stale = Save(cells(a="a, edited", b="b0", c="c0"))
    states = {each.digest: each.state for each in written}
    recalled = choose_base(stale, memory, states.get)
    assert recalled.digest == first.digest and recalled.notebook == first.notebook
    # Without the update log to rebuild it from, the closest version kept whole.
    assert choose_base(stale, memory, None) in memory.whole
