"""The notebook as a pycrdt Doc, in jupyter_ydoc's YNotebook schema.

Root ``meta`` (Map): ``nbformat``, ``nbformat_minor``, ``metadata`` (Map). Root ``cells``
(Array of Map): ``id``, ``cell_type``, ``source`` (Text), ``metadata`` (Map), and for code cells
``execution_count`` and ``outputs`` (Array of Map; a stream output's ``text`` is a Text).
Every cell in the doc has an id, even for nbformat <= 4.4 files; rendering drops ids there, as
YNotebook does. Root ``p2prtc_moves`` (Map) is p2prtc's own: what each moved cell's copy was
made from (see core.repair).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from pycrdt import Array, Doc, Map, Text

from p2prtc.core.notebook import Cell, Notebook

CELLS = "cells"
META = "meta"
# A root of p2prtc's own, beside the YNotebook schema (Jupyter reads only cells and meta).
MOVES = "p2prtc_moves"
# Keys that live in the doc as shared types rather than plain values.
_SHARED_CELL_KEYS = frozenset({"source", "metadata", "outputs"})
_TRANSIENT_CELL_KEYS = frozenset({"execution_state"})


def new_cell_id() -> str:
    return str(uuid.uuid4())


def cells_of(doc: Doc[Any]) -> Array[Map[Any]]:
    cells: Array[Map[Any]] = doc.get(CELLS, type=Array)
    return cells


def meta_of(doc: Doc[Any]) -> Map[Any]:
    meta: Map[Any] = doc.get(META, type=Map)
    return meta


def moves_of(doc: Doc[Any]) -> Map[Any]:
    """For each cell copy a p2prtc move made, by its Map item ("client:clock"), the state
    vector (hex) of the doc it was made from: what the mover had seen (see core.repair)."""
    moves: Map[Any] = doc.get(MOVES, type=Map)
    return moves


def keeps_cell_ids(nb: Notebook) -> bool:
    """nbformat 4.5 added cell ids; older files must not gain them."""
    return (nb.get("nbformat"), nb.get("nbformat_minor", 0)) >= (4, 5)


def with_id(cell: Cell) -> Cell:
    """The cell, given a fresh id if the file had none (nbformat <= 4.4)."""
    return cell if isinstance(cell.get("id"), str) and cell["id"] else {**cell, "id": new_cell_id()}


def make_output(output: dict[str, Any]) -> Map[Any]:
    if output.get("output_type") == "stream" and isinstance(output.get("text"), str):
        return Map({**output, "text": Text(output["text"])})
    return Map(dict(output))


def make_cell(cell: Cell) -> Map[Any]:
    """A new shared cell from a joined-form cell dict, which must carry an ``id``."""
    shared: dict[str, Any] = {
        key: value for key, value in cell.items() if key not in _SHARED_CELL_KEYS
    }
    shared["source"] = Text(cell["source"])
    shared["metadata"] = Map(dict(cell.get("metadata", {})))
    if cell["cell_type"] == "code":
        shared.setdefault("execution_count", None)
        shared["outputs"] = Array([make_output(output) for output in cell.get("outputs", [])])
    return Map(shared)


def load_notebook(doc: Doc[Any], nb: Notebook) -> None:
    """The one initial load of a file into an empty doc (only the sharer does this)."""
    with doc.transaction(origin="load"):
        meta = meta_of(doc)
        meta["nbformat"] = nb["nbformat"]
        meta["nbformat_minor"] = nb["nbformat_minor"]
        meta["metadata"] = Map(dict(nb["metadata"]))
        cells_of(doc).extend([make_cell(with_id(cell)) for cell in nb["cells"]])


def shared_to_py(shared: Map[Any] | Array[Any]) -> Any:
    """A shared type as plain Python, through yrs' JSON export.

    Much faster than pycrdt's ``to_py`` (which crosses into Rust once per key), and it
    writes integral numbers as integers: Yjs stores every number as a float, while JSON files
    keep integers as integers.
    """
    return orjson.loads(str(shared))


def doc_to_notebook(doc: Doc[Any]) -> Notebook:
    """The notebook in the doc, joined form, every cell with its id."""
    meta = shared_to_py(meta_of(doc)) or {}
    cells: list[Cell] = shared_to_py(cells_of(doc))
    for cell in cells:
        for key in _TRANSIENT_CELL_KEYS:
            cell.pop(key, None)
    return {
        "cells": cells,
        "metadata": meta.get("metadata", {}),
        "nbformat": meta.get("nbformat", 4),
        "nbformat_minor": meta.get("nbformat_minor", 5),
    }


def without_cell_ids(nb: Notebook) -> Notebook:
    """The notebook as written to disk: ids only where the format has them."""
    if keeps_cell_ids(nb):
        return nb
    return {**nb, "cells": [_drop_id(cell) for cell in nb["cells"]]}


def _drop_id(cell: Cell) -> Cell:
    return {key: value for key, value in cell.items() if key != "id"}
