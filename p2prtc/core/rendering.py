"""Rendering a notebook again after a small change: only the cells that changed.

A peer's keystroke changes one cell, and the whole file is written again: rendering all of it
(splitting lines, dumping JSON, halving orjson's indents) was the largest step between a
peer's update and the file on disk (0.6 ms of 0.9 for a 33 KB notebook). ``CellRenderer``
keeps each cell's rendered text from the last render, keyed by the cell's compact JSON, and
renders only cells it has not seen; the file is the same text, byte for byte, as
``render_notebook`` gives.

A cell is known by the SHA-256 of its compact JSON. Texts are kept up to ``MAX_KEPT_CHARS``
in all, and only for cells under ``MAX_KEPT_CELL_CHARS``: a cell with big outputs (an image)
renders fast, its few long lines aside, and is not held in memory twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Container
from typing import Any

import orjson

from p2prtc.core.notebook import Cell, Notebook, dumps_like_jupyter, split_cell

MAX_KEPT_CHARS = 2 * 2**20
MAX_KEPT_CELL_CHARS = 64 * 2**10
# Depth of a cell in the file ("cells" list, inside the notebook): indent 1 per level.
_CELL_INDENT = "  "
_EMPTY_CELLS = '\n "cells": []'


class CellRenderer:
    """Renders notebooks like ``render_notebook``, reusing the cells of its last render."""

    def __init__(self) -> None:
        self._kept: dict[bytes, str] = {}

    def render(self, nb: Notebook, string_sources: Container[int] = ()) -> str:
        """The file text for ``nb`` (cells without ids where the file has none), with the
        sources of the cells at ``string_sources`` kept as one string."""
        kept: dict[bytes, str] = {}
        budget = MAX_KEPT_CHARS
        texts = []
        for index, cell in enumerate(nb["cells"]):
            keep_source = index in string_sources
            key = None if _is_big(cell) else _cell_key(cell, keep_source)
            text = None if key is None else self._kept.get(key) or kept.get(key)
            if text is None:
                text = _render_cell(cell, keep_source)
            if key is not None and len(text) <= min(budget, MAX_KEPT_CELL_CHARS):
                kept[key] = text
                budget -= len(text)
            texts.append(text)
        self._kept = kept
        return _assemble(nb, texts)


def _is_big(cell: Cell) -> bool:
    """Too big to keep, roughly: the characters of its source, output texts and attachments
    (a cell's bulk; counting them is cheaper than writing the cell to know its size)."""
    size = _text_chars(cell.get("source"))
    for output in cell.get("outputs", ()) if isinstance(cell.get("outputs"), list) else ():
        if isinstance(output, dict):
            size += _text_chars(output.get("text")) + _bundle_chars(output.get("data"))
    attachments = cell.get("attachments")
    for bundle in attachments.values() if isinstance(attachments, dict) else ():
        size += _bundle_chars(bundle)
    return size > MAX_KEPT_CELL_CHARS


def _bundle_chars(bundle: Any) -> int:
    return sum(map(_text_chars, bundle.values())) if isinstance(bundle, dict) else 0


def _text_chars(value: Any) -> int:
    return len(value) if isinstance(value, str) else 0


def _cell_key(cell: Cell, keep_source: bool) -> bytes | None:
    """The digest of what the cell's rendered text depends on; None when orjson cannot
    write the cell (an integer beyond 64 bits: such a cell is rendered each time)."""
    try:
        data = orjson.dumps(cell, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return None
    digest = hashlib.sha256(b"s" if keep_source else b"l")
    digest.update(data)
    return digest.digest()


def _render_cell(cell: Cell, keep_source: bool) -> str:
    """The cell's text as it stands in the file, indented to its depth there."""
    text = dumps_like_jupyter(split_cell(cell, keep_source=keep_source))
    return _CELL_INDENT + text.replace("\n", "\n" + _CELL_INDENT)


def _assemble(nb: Notebook, cell_texts: list[str]) -> str:
    """The notebook's text around its cells: the rest of it rendered with no cells, the
    cells put in their place (the only line at indent 1 that names "cells": JSON strings
    hold no raw newline, and only the notebook's own keys sit at indent 1)."""
    frame = dumps_like_jupyter({**nb, "cells": []})
    if not cell_texts:
        return frame + "\n"
    before, found, after = frame.partition(_EMPTY_CELLS)
    assert found, "a rendered notebook names its cells at indent 1"
    parts = [before, '\n "cells": [\n']
    for text in cell_texts:
        parts += (text, ",\n")
    parts[-1] = "\n ]"  # one join: a big notebook's text is copied once
    return "".join([*parts, after, "\n"])
