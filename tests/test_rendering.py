"""Rendering again after small changes writes exactly what a whole render writes.

The daemon renders the file after every peer's update with one ``CellRenderer`` per share,
which reuses the text of cells it rendered before: a stale or misplaced cell text would put
a wrong file on the user's disk. Each step here renders with the same renderer and compares
with the stdlib writer (``dump``, independent of p2prtc) and with ``render_notebook``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nbgen import code_cell, dump, json_text, json_value, markdown_cell, notebook, stream

from p2prtc.core import rendering
from p2prtc.core.notebook import Notebook, parse_notebook, render_notebook
from p2prtc.core.rendering import CellRenderer

cells = st.builds(
    lambda source, text, metadata, count, markdown: (
        markdown_cell(source, metadata=metadata)
        if markdown
        else code_cell(source, [stream(text)], execution_count=count, metadata=metadata)
    ),
    json_text,
    json_text,
    st.dictionaries(json_text, json_value, max_size=2),
    st.none() | st.integers(0, 99),
    st.booleans(),
)


def edit_source(nb: Notebook, data: st.DataObject) -> None:
    if nb["cells"]:
        cell = data.draw(st.sampled_from(nb["cells"]))
        cell["source"] += data.draw(json_text, label="typed")


def insert(nb: Notebook, data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(nb["cells"])), label="at")
    nb["cells"].insert(at, data.draw(cells, label="cell"))


def delete(nb: Notebook, data: st.DataObject) -> None:
    if nb["cells"]:
        del nb["cells"][data.draw(st.integers(0, len(nb["cells"]) - 1), label="deleted")]


def move(nb: Notebook, data: st.DataObject) -> None:
    if nb["cells"]:
        cell = nb["cells"].pop(data.draw(st.integers(0, len(nb["cells"]) - 1), label="moved"))
        nb["cells"].insert(data.draw(st.integers(0, len(nb["cells"])), label="to"), cell)


def copy_cell(nb: Notebook, data: st.DataObject) -> None:
    """The same cell twice (a doc with a cell moved by two peers, before its repair)."""
    if nb["cells"]:
        nb["cells"].append(copy.deepcopy(data.draw(st.sampled_from(nb["cells"]))))


def edit_metadata(nb: Notebook, data: st.DataObject) -> None:
    nb["metadata"] = data.draw(st.dictionaries(json_text, json_value, max_size=3))


STEPS = [edit_source, insert, delete, move, copy_cell, edit_metadata]


@settings(max_examples=150, deadline=None)
@given(data=st.data(), first=st.lists(cells, max_size=4))
def test_each_render_is_the_file_jupyter_writes(data: st.DataObject, first: list[Any]) -> None:
    nb = notebook(first)
    renderer = CellRenderer()
    for _ in range(data.draw(st.integers(1, 6), label="steps")):
        assert renderer.render(nb) == dump(nb)
        data.draw(st.sampled_from(STEPS), label="step")(nb, data)
    assert renderer.render(nb) == dump(nb)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), first=st.lists(cells, min_size=1, max_size=4))
def test_sources_kept_as_one_string_stay_so(data: st.DataObject, first: list[Any]) -> None:
    """A cell written with its source as one string (a script's file) is written so again,
    and the same cell at another index is not."""
    nb = notebook(first)
    renderer = CellRenderer()
    for _ in range(3):
        kept = data.draw(st.sets(st.integers(0, len(nb["cells"]) - 1)), label="one string")
        assert renderer.render(nb, kept) == render_notebook(nb, kept)
        move(nb, data)


@pytest.mark.parametrize("limit", ["MAX_KEPT_CHARS", "MAX_KEPT_CELL_CHARS"])
def test_a_cell_too_big_to_keep_is_rendered_each_time(
    limit: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rendering, limit, 200)
    nb = notebook([code_cell("x" * 300, [stream("out\n" * 50)]), markdown_cell("# title")])
    renderer = CellRenderer()
    assert renderer.render(nb) == dump(nb)
    nb["cells"][0]["outputs"][0]["text"] = "other\n"
    assert renderer.render(nb) == dump(nb)


def test_real_notebooks_after_an_edit(notebooks_dir: Path) -> None:
    renderer = CellRenderer()
    for path in sorted(notebooks_dir.glob("*.ipynb")):
        text = path.read_text(encoding="utf-8")
        nb = parse_notebook(text)
        assert renderer.render(nb) == text, path.name
        nb["cells"][-1]["source"] += "\nprint('edited')"
        nb["cells"].insert(0, nb["cells"].pop())
        assert renderer.render(nb) == render_notebook(nb), path.name
