"""Notebook builders for tests, Jupyter's exact file format, and a daemon+editor replica model.

Notebooks here are plain dicts in nbformat's *joined* form (sources and stream texts are single
strings), like ``nbformat.reads`` gives. ``dump`` writes them the way Jupyter does, with the
stdlib encoder, independently of p2prtc's renderer, so tests can compare the two.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import random
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import nbformat
from hypothesis import strategies as st
from pycrdt import merge_updates

from p2prtc.core.edits import Author
from p2prtc.core.engine import NotebookEngine, text_digest

Notebook = dict[str, Any]
Cell = dict[str, Any]
Output = dict[str, Any]

# The daemon id of the SharedFiles that unit tests open (stamps its saves).
THIS_DAEMON = "d0d0d0d0d0d0d0d0"
_SPLIT_MIMES = frozenset({"application/javascript", "image/svg+xml"})
_ids = itertools.count()


# JSON values as notebooks hold them (strategies for hypothesis).
json_text = st.text(
    st.characters(codec="utf-8"),  # no surrogates: they cannot be in a UTF-8 file
    max_size=30,
)
json_scalar = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)  # the doc turns bigger ones into floats
    | st.floats(allow_nan=False, allow_infinity=False)  # nbformat would write "Infinity"
    | json_text
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(json_text, inner, max_size=3),
    max_leaves=8,
)


def next_id() -> str:
    """A readable id, unique within the test session."""
    return f"cell-{next(_ids)}"


def tiny_png(width: int = 1, height: int = 1, rng: random.Random | None = None) -> str:
    """A valid PNG image, base64-encoded with a trailing newline like Jupyter: grey pixels,
    or with ``rng`` noise, which no compression shrinks (as a photo or a dense plot)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = b"".join(
        b"\0" + (rng.randbytes(width) if rng else b"\x80" * width) for _ in range(height)
    )
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 1 if rng else -1))
        + chunk(b"IEND", b"")
    )
    return base64.b64encode(png).decode() + "\n"


def stream(text: str, name: str = "stdout") -> Output:
    return {"name": name, "output_type": "stream", "text": text}


def display_png(text_plain: str = "<Figure size 432x288 with 1 Axes>", size: int = 1) -> Output:
    return {
        "data": {"image/png": tiny_png(size, size), "text/plain": text_plain},
        "metadata": {"needs_background": "light"},
        "output_type": "display_data",
    }


def execute_result(text_plain: str, count: int) -> Output:
    return {
        "data": {"text/plain": text_plain},
        "execution_count": count,
        "metadata": {},
        "output_type": "execute_result",
    }


def error_output(ename: str = "ValueError", evalue: str = "bad") -> Output:
    return {
        "ename": ename,
        "evalue": evalue,
        "output_type": "error",
        "traceback": ["Traceback (most recent call last)", f"{ename}: {evalue}"],
    }


def code_cell(
    source: str,
    outputs: Iterable[Output] = (),
    *,
    execution_count: int | None = None,
    metadata: dict[str, Any] | None = None,
    cell_id: str | None = None,
) -> Cell:
    return {
        "cell_type": "code",
        "execution_count": execution_count,
        "id": cell_id or next_id(),
        "metadata": metadata or {},
        "outputs": list(outputs),
        "source": source,
    }


def markdown_cell(
    source: str, *, metadata: dict[str, Any] | None = None, cell_id: str | None = None
) -> Cell:
    return {
        "cell_type": "markdown",
        "id": cell_id or next_id(),
        "metadata": metadata or {},
        "source": source,
    }


def raw_cell(source: str, *, cell_id: str | None = None) -> Cell:
    return {"cell_type": "raw", "id": cell_id or next_id(), "metadata": {}, "source": source}


def notebook(
    cells: Iterable[Cell], *, minor: int = 5, metadata: Notebook | None = None
) -> Notebook:
    """A notebook of these cells; nbformat < 4.5 files carry no cell ids."""
    listed = [dict(cell) for cell in cells]
    if minor < 5:
        for cell in listed:
            cell.pop("id", None)
    return {
        "cells": listed,
        "metadata": metadata
        if metadata is not None
        else {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python", "version": "3.11.4"},
        },
        "nbformat": 4,
        "nbformat_minor": minor,
    }


def sample_notebook(*, minor: int = 5) -> Notebook:
    """A small notebook with every kind of cell and output."""
    return notebook(
        [
            markdown_cell("# Title\n\nSome *text* with ünïcode ✓ and 😀.\n"),
            code_cell(
                "import numpy as np\nx = np.arange(10)\nprint(x)",
                [stream("[0 1 2 3 4 5 6 7 8 9]\n")],
                execution_count=1,
            ),
            code_cell(
                "x.sum()", [execute_result("45", 2)], execution_count=2, metadata={"tags": ["a"]}
            ),
            code_cell("plot(x)", [display_png()], execution_count=3),
            raw_cell("raw text\nsecond line"),
            code_cell("1 / 0", [error_output("ZeroDivisionError", "division by zero")]),
            code_cell(""),
        ],
        minor=minor,
    )


def generated_notebook(n_cells: int, *, seed: int = 0, minor: int = 5) -> Notebook:
    """A big synthetic notebook: alternating markdown and code cells with text outputs."""
    rng = random.Random(seed)
    cells: list[Cell] = []
    for index in range(n_cells):
        words = " ".join(rng.choice(["alpha", "beta", "gamma", "delta"]) for _ in range(12))
        if index % 2 == 0:
            cells.append(markdown_cell(f"## Section {index}\n\n{words}\n", cell_id=f"c{index}"))
        else:
            source = f"values_{index} = [{', '.join(str(rng.randint(0, 99)) for _ in range(8))}]\n"
            cells.append(
                code_cell(
                    source + f"print(sum(values_{index}))",
                    [stream(f"{rng.randint(0, 800)}\n")],
                    execution_count=index,
                    cell_id=f"c{index}",
                )
            )
    return notebook(cells, minor=minor)


def big_outputs_notebook(megabytes: float, *, cells: int = 100, seed: int = 0) -> Notebook:
    """About ``megabytes`` MB of notebook: code cells each showing a noise image (PNG)."""
    rng = random.Random(seed)
    # base64 takes 4 characters per 3 bytes; the file's other text is small beside it.
    side = int((megabytes * 1e6 / cells * 3 / 4) ** 0.5)
    return notebook(
        code_cell(
            f"plt.imshow(noise[{index}])",
            [
                {
                    "data": {"image/png": tiny_png(side, side, rng), "text/plain": "<Figure>"},
                    "metadata": {},
                    "output_type": "display_data",
                }
            ],
            execution_count=index + 1,
            cell_id=f"c{index}",
        )
        for index in range(cells)
    )


def _split_bundle(bundle: dict[str, Any]) -> None:
    for key, value in bundle.items():
        if isinstance(value, str) and (key.startswith("text/") or key in _SPLIT_MIMES):
            bundle[key] = value.splitlines(True)


def split_lines(nb: Notebook) -> Notebook:
    """A copy with multi-line strings split into lines, as ``nbformat.v4.rwbase.split_lines``."""
    out = copy.deepcopy(nb)
    for cell in out["cells"]:
        if isinstance(cell.get("source"), str):
            cell["source"] = cell["source"].splitlines(True)
        for attachment in cell.get("attachments", {}).values():
            _split_bundle(attachment)
        for output in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            if output["output_type"] in ("execute_result", "display_data"):
                _split_bundle(output.get("data", {}))
            elif output["output_type"] == "stream" and isinstance(output.get("text"), str):
                output["text"] = output["text"].splitlines(True)
    return out


def dump(nb: Notebook) -> str:
    """The file text Jupyter writes for a joined-form notebook (``nbformat.write``)."""
    return json.dumps(split_lines(nb), indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def _join(value: Any) -> Any:
    return "".join(value) if isinstance(value, list) else value


def parse(text: str) -> Notebook:
    """File text to the joined form (plain dicts), as ``nbformat.reads`` does."""
    nb: Notebook = json.loads(text)
    for cell in nb["cells"]:
        cell["source"] = _join(cell["source"])
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = _join(output["text"])
            for key, value in output.get("data", {}).items():
                if isinstance(value, list) and all(isinstance(line, str) for line in value):
                    output["data"][key] = _join(value)
    return nb


# nbformat has no type hints: these typed entry points keep the untyped calls in one place.


def nbformat_node(text: str) -> Any:
    """``nbformat.reads`` without conversion: a NotebookNode."""
    return nbformat.reads(text, as_version=nbformat.NO_CONVERT)  # type: ignore[no-untyped-call]


def nbformat_problem(text: str) -> str | None:
    """Why Jupyter would not open ``text`` as it is, None when it would: nbformat's schema
    (``nbformat.validate``) and each cell id once. ``validate`` does not report an id
    twice: it renames the second copy in the node, with a warning; so ids are checked here.
    """
    try:
        node = nbformat_node(text)
    except Exception as exc:  # any failure is what we report
        return f"{type(exc).__name__}: {exc}"
    ids = Counter(cell["id"] for cell in node.get("cells", []) if "id" in cell)
    twice = sorted(cell_id for cell_id, count in ids.items() if count > 1)
    if twice:
        return f"cell ids twice: {twice}"
    try:
        nbformat.validate(node)  # type: ignore[no-untyped-call]
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def nbformat_writes(node: Any) -> str:
    """The file ``nbformat.write`` makes of a NotebookNode (``writes`` plus a newline)."""
    return str(nbformat.writes(node)) + "\n"  # type: ignore[no-untyped-call]


def nbformat_reads(text: str) -> Notebook:
    """``nbformat.reads`` without conversion, as plain dicts."""
    plain: Notebook = json.loads(json.dumps(nbformat_node(text)))
    return plain


def upgrade_to_45(text: str) -> str:
    """A 4.4 file as nbformat 4.5 with cell ids, written the way Jupyter writes it."""
    node = nbformat_node(text)
    upgrade = nbformat.v4.upgrade
    upgraded = upgrade(node, from_version=4, from_minor=node.nbformat_minor)  # type: ignore[no-untyped-call]
    return nbformat_writes(upgraded)


def nbformat_v3_text() -> str:
    """An empty nbformat 3 notebook as nbformat writes it."""
    v3 = nbformat.v3
    empty = v3.new_notebook(worksheets=[v3.new_worksheet()])  # type: ignore[no-untyped-call]
    return str(v3.writes_json(empty))  # type: ignore[no-untyped-call]


def sources(nb: Notebook) -> list[str]:
    return [cell["source"] for cell in nb["cells"]]


Edit = Callable[[Notebook], None]


@dataclass
class Replica:
    """One machine: the daemon's engine plus the editor that has the file open.

    ``buffer`` is what the editor holds: the text the daemon last wrote when the editor
    reloads, or an older text when it does not (a stale buffer). ``sent`` collects the
    updates this replica's saves produced, in order, for delivery to the peers. ``states``
    stands for the daemon's update log: the doc state at each text it wrote or ingested, by
    digest, to recall versions older than those the engine keeps whole.
    """

    name: str
    engine: NotebookEngine
    buffer: str
    disk: str
    sent: list[bytes] = field(default_factory=list)
    states: dict[bytes, bytes] = field(default_factory=dict)
    stamps: bool = False  # saves stamp the cells they change (core.edits), by ``name``

    def __post_init__(self) -> None:
        self.remember_state(self.disk)

    @classmethod
    def sharer(cls, name: str, text: str) -> Replica:
        return cls(name, NotebookEngine.load(text), text, text)

    @classmethod
    def joiner(cls, name: str, state: bytes) -> Replica:
        engine = NotebookEngine.from_updates([state])
        text = engine.render()
        engine.remember_written(text)
        return cls(name, engine, text, text)

    def remember_state(self, text: str) -> None:
        self.states[text_digest(text)] = self.engine.full_state()

    def notebook(self) -> Notebook:
        """What the editor shows."""
        return parse(self.buffer)

    def save(self, edit: Edit) -> bytes | None:
        """The user edits the buffer and saves it; the daemon ingests the save."""
        nb = self.notebook()
        edit(nb)
        return self.save_text(dump(nb))

    def save_text(self, text: str) -> bytes | None:
        self.buffer = self.disk = text
        # Stamped saves only where a test asks (seeded tests replay exact update contents).
        author = Author(self.name, float(len(self.sent))) if self.stamps else None
        result = self.engine.ingest(text, recall=self.states.get, author=author)
        if result.update is not None:
            self.sent.append(result.update)
            if not result.needs_write:
                self.remember_state(text)
        repair = self.write(reload=True) if result.needs_write else None
        if result.update is None or repair is None:
            return result.update or repair
        return merge_updates(result.update, repair)

    def receive(self, update: bytes, *, reload: bool = True) -> bytes | None:
        """A peer's update arrives: the daemon applies it, repairs moved cells and writes the
        file if it changed. Returns the repair's update, for the peers (also in ``sent``)."""
        self.apply(update)
        return self.write(reload=reload)

    def apply(self, update: bytes) -> None:
        self.engine.doc.apply_update(update)

    def write(self, *, reload: bool) -> bytes | None:
        repaired = self.engine.repair()
        repair = repaired.update
        if repair is not None:
            self.sent.append(repair)
        text, notebook = self.engine.rendered(repaired.notebook)
        if text == self.disk:
            return repair
        self.disk = text
        self.engine.remember_written(text, notebook, waiting=repaired.waiting)
        self.remember_state(text)
        if reload:
            self.buffer = text
        return repair


def render_with_line(text: str, index: int, line: str, *, last: bool = False) -> str:
    """``text`` (a notebook) with ``line`` added to cell ``index``, saved like an editor."""
    nb = json.loads(text)
    source = nb["cells"][index]["source"]
    if last:
        source.append("\n" + line)
    else:
        source.insert(0, line + "\n")
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def peer_update(engine: NotebookEngine, index: int, line: str) -> bytes:
    """A peer's edit of cell ``index``, made on a copy of the doc."""
    return peer_save(engine, lambda text: render_with_line(text, index, line))


def peer_save(engine: NotebookEngine, edit: Callable[[str], str]) -> bytes:
    """The update of a peer's save (``edit`` turns its file text into the saved one), made
    on a copy of the doc."""
    peer = NotebookEngine.from_updates([engine.full_state()])
    text = peer.render()
    peer.remember_written(text)
    update = peer.ingest(edit(text)).update
    assert update is not None
    return update


def render_with_move(text: str, source: int, target: int) -> str:
    """``text`` (a notebook) with cell ``source`` moved to ``target``, saved like an editor."""
    nb = json.loads(text)
    nb["cells"].insert(target, nb["cells"].pop(source))
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
