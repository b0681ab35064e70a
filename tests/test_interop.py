"""p2prtc's doc is a jupyter_ydoc YNotebook: Jupyter's own collaboration model reads it as the file.

``YNotebook(doc).get()`` must give what ``nbformat.reads`` gives for the file p2prtc renders
from the same doc, for every shared notebook, after ingests, and after Jupyter's model wrote
into the doc. YNotebook drops cell ids for nbformat <= 4.4 (as the file does) and empty
``attachments`` of markdown and raw cells (the file keeps them): the comparison does too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jupyter_ydoc import YNotebook
from nbgen import (
    Notebook,
    code_cell,
    display_png,
    markdown_cell,
    nbformat_reads,
    parse,
    sample_notebook,
    stream,
    upgrade_to_45,
)
from nbgen import dump as dump_like_jupyter

from p2prtc.core.engine import NotebookEngine


def plain(value: Any) -> Any:
    """NotebookNodes and the like as plain JSON values."""
    return json.loads(json.dumps(value))


def without_empty_attachments(nb: Notebook) -> Notebook:
    cells = [
        {k: v for k, v in cell.items() if k != "attachments" or v or cell["cell_type"] == "code"}
        for cell in nb["cells"]
    ]
    return {**nb, "cells": cells}


def ynotebook_view(engine: NotebookEngine) -> Notebook:
    return without_empty_attachments(plain(YNotebook(engine.doc).get()))


def file_view(text: str) -> Notebook:
    return without_empty_attachments(nbformat_reads(text))


@pytest.fixture(scope="module")
def shared_texts(notebooks_dir: Path) -> list[tuple[str, str]]:
    texts = [(p.name, p.read_text(encoding="utf-8")) for p in sorted(notebooks_dir.glob("*.ipynb"))]
    assert len(texts) >= 5
    return texts + [(f"{name} (4.5)", upgrade_to_45(text)) for name, text in texts]


def test_shared_notebooks_read_the_same_through_ynotebook(
    shared_texts: list[tuple[str, str]],
) -> None:
    for name, text in shared_texts:
        sharer = NotebookEngine.load(text)
        joiner = NotebookEngine.from_updates([sharer.full_state()])
        expected = file_view(text)
        assert ynotebook_view(sharer) == expected, name
        assert ynotebook_view(joiner) == expected, name


def edit_everything(nb: Notebook) -> None:
    """Sources, outputs, metadata, and cell inserts, deletes and moves, in one save."""
    cells = nb["cells"]
    cells[0]["source"] += "\nA line typed in p2prtc ✓"
    code = [cell for cell in cells if cell["cell_type"] == "code"]
    code[0]["outputs"] = [stream("fresh output\n"), display_png("<Figure 1>", size=3)]
    code[0]["execution_count"] = 99
    code[-1]["metadata"]["tags"] = ["interop"]
    del cells[1]
    cells.insert(2, cells.pop(len(cells) - 1))
    new_cell = code_cell("print('inserted')", [stream("inserted\n")], execution_count=100)
    if nb["nbformat_minor"] < 5:
        del new_cell["id"]
    cells.insert(3, new_cell)
    nb["metadata"]["p2prtc"] = {"edited": True}


def test_after_ingests_ynotebook_reads_what_the_file_says(
    shared_texts: list[tuple[str, str]],
) -> None:
    with_code = [(name, text) for name, text in shared_texts if '"cell_type": "code"' in text]
    for name, text in with_code[:2] + with_code[-2:]:
        sharer = NotebookEngine.load(text)
        joiner = NotebookEngine.from_updates([sharer.full_state()])
        joiner.remember_written(joiner.render())
        nb = parse(text)
        edit_everything(nb)
        saved = dump_like_jupyter(nb)

        result = sharer.ingest(saved)

        assert result.update is not None
        joiner.doc.apply_update(result.update)
        assert ynotebook_view(sharer) == file_view(saved), name
        assert ynotebook_view(joiner) == file_view(joiner.render()), name
        assert joiner.render() == saved, name


@pytest.mark.parametrize("minor", [4, 5])
def test_p2prtc_renders_what_ynotebook_wrote(minor: int) -> None:
    """A Jupyter client editing the doc through YNotebook: p2prtc writes its edits out."""
    engine = NotebookEngine.load(dump_like_jupyter(sample_notebook(minor=minor)))
    ynotebook = YNotebook(engine.doc)
    wanted = ynotebook.get()
    wanted["cells"][1]["source"] = "# edited in Jupyter\n" + wanted["cells"][1]["source"]
    wanted["cells"].append(markdown_cell("Added by a Jupyter client"))
    if minor < 5:
        del wanted["cells"][-1]["id"]

    ynotebook.set(wanted)

    text = engine.render()
    rendered = parse(text)
    assert without_empty_attachments(rendered) == without_empty_attachments(plain(ynotebook.get()))
    assert rendered["cells"][1]["source"].startswith("# edited in Jupyter\n")
    assert rendered["cells"][-1]["source"] == "Added by a Jupyter client"
    # The editor saves that file before the daemon wrote it: nothing is merged twice.
    result = engine.ingest(text)
    assert result.update is None
    assert not result.needs_write
    assert engine.render() == text
