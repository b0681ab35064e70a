"""Notebook files as text: parse and validate, and render exactly the way Jupyter writes them.

A notebook here is a plain dict in nbformat's *joined* form (what ``nbformat.reads`` gives):
``source``, stream ``text`` and multi-line mime-bundle values are single strings. Rendering
splits them into lines again and dumps JSON with Jupyter's settings (indent 1, sorted keys,
``ensure_ascii=False``, trailing newline), so an unedited Jupyter file round-trips byte for byte.
"""

from __future__ import annotations

import json
import re
from collections.abc import Container
from typing import Any

import orjson

from p2prtc.errors import ExitCode, P2PError

Notebook = dict[str, Any]
Cell = dict[str, Any]

MAX_NOTEBOOK_BYTES = 64 * 1024 * 1024
CELL_TYPES = frozenset({"code", "markdown", "raw"})
OUTPUT_TYPES = frozenset({"stream", "display_data", "execute_result", "error"})
# nbformat splits these non-text/* mime types into lines too (nbformat.v4.rwbase).
_NON_TEXT_SPLIT_MIMES = frozenset({"application/javascript", "image/svg+xml"})
_BUNDLE_OUTPUTS = frozenset({"execute_result", "display_data"})


class InvalidNotebook(P2PError):
    """The file is not a valid Jupyter notebook."""

    exit_code = ExitCode.INVALID_NOTEBOOK


class NotebookTooLarge(P2PError):
    """The notebook is larger than p2prtc's size limit."""

    exit_code = ExitCode.INVALID_NOTEBOOK


class UnsupportedNotebookFormat(P2PError):
    """Only nbformat 4 notebooks can be shared."""

    exit_code = ExitCode.INVALID_NOTEBOOK


def parse_notebook(data: bytes | str, *, max_bytes: int = MAX_NOTEBOOK_BYTES) -> Notebook:
    """Parse and validate notebook file contents into the joined form.

    Raises a P2PError subclass (never anything else) when the contents are not a notebook.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise NotebookTooLarge(f"{len(raw)} bytes, limit {max_bytes}")
    if not raw.strip():
        raise InvalidNotebook("the file is empty")
    value = _loads(raw)
    if b"0" * 19 in raw.translate(_DIGITS_AS_ZEROS):
        _big_integers_to_floats(value)
    validate_notebook(value)
    return join_lines(value)


# Only a run of 19+ digits can be an integer beyond 64 bits: a C-speed scan spares the walk
# (10x faster than the regex \d{19} on a notebook full of base64 images).
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


def _big_integers_to_floats(value: Any) -> None:
    """Turn integers beyond 64 bits into floats, in place.

    A Yrs number is an i64 or a float (as in JavaScript, and Jupyter's own collaborative
    model stores such numbers as floats too); pycrdt aborts the whole process (a Rust panic)
    when given a bigger Python int.
    """
    # Iterative: the value may be nested almost to the recursion limit.
    stack = [value] if isinstance(value, dict | list) else []
    while stack:
        container = stack.pop()
        keys = container.keys() if isinstance(container, dict) else range(len(container))
        for key in keys:
            item = container[key]
            if type(item) is int and not _I64_MIN <= item <= _I64_MAX:
                container[key] = _as_float(item)
            elif isinstance(item, dict | list):
                stack.append(item)


def _as_float(number: int) -> float:
    try:
        return float(number)
    except OverflowError:
        raise InvalidNotebook(f"the number {str(number)[:20]}... is too large") from None


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    # orjson refuses a few things json accepts (integers beyond 64 bits); the stdlib
    # parser also gives the clearer message when the text really is broken.
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidNotebook(f"not UTF-8 text at byte {exc.start}") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InvalidNotebook(f"not valid JSON: {exc}") from None
    # Unlike orjson, json accepts escaped unpaired surrogates ("\ud800"): no UTF-8 file and
    # no Yrs string can hold them.
    if _has_unpaired_surrogate(value):
        raise InvalidNotebook("a string holds an unpaired UTF-16 surrogate")
    return value


def _has_unpaired_surrogate(value: Any) -> bool:
    stack = [value]  # iterative: the value may be nested almost to the recursion limit
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _require(condition: bool, detail: str) -> None:
    if not condition:
        raise InvalidNotebook(detail)


def _is_one_of(value: Any, allowed: frozenset[str]) -> bool:
    return isinstance(value, str) and value in allowed  # a list or dict is not hashable


def _is_text(value: Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(line, str) for line in value)
    )


def validate_notebook(value: Any) -> None:
    """Check the nbformat 4 structure that p2prtc relies on (a fast subset of the schema)."""
    _require(isinstance(value, dict), "the top level is not a JSON object")
    _require("nbformat" in value, "it has no nbformat version")
    major = value.get("nbformat")
    if major != 4:
        raise UnsupportedNotebookFormat(f"nbformat is {major!r}")
    _require(type(value.get("nbformat_minor")) is int, "nbformat_minor is not an integer")
    _require(isinstance(value.get("metadata"), dict), "metadata is not an object")
    cells = value.get("cells")
    _require(isinstance(cells, list), "cells is not a list")
    for index, cell in enumerate(cells):
        _validate_cell(index, cell)


def _validate_cell(index: int, cell: Any) -> None:
    problem = _cell_problem(cell)
    if problem is not None:
        raise InvalidNotebook(f"cell {index} {problem}")


def _cell_problem(cell: Any) -> str | None:
    """What is wrong with a cell, if anything. Every save checks every cell: the messages
    are made only for a cell that fails."""
    if not isinstance(cell, dict):
        return "is not an object"
    if not _is_one_of(cell.get("cell_type"), CELL_TYPES):
        return "has no valid cell_type"
    if not _is_text(cell.get("source")):
        return "source is not text"
    if not isinstance(cell.get("metadata", {}), dict):
        return "metadata is not an object"
    if not isinstance(cell.get("id", ""), str):
        return "id is not a string"
    if not isinstance(cell.get("attachments", {}), dict):
        return "attachments is not an object"
    return _code_cell_problem(cell) if cell["cell_type"] == "code" else None


def _code_cell_problem(cell: dict[str, Any]) -> str | None:
    count = cell.get("execution_count")
    if count is not None and type(count) is not int:
        return "execution_count is not an integer"
    outputs = cell.get("outputs", [])
    if not isinstance(outputs, list):
        return "outputs is not a list"
    for output in outputs:
        if not (isinstance(output, dict) and _is_one_of(output.get("output_type"), OUTPUT_TYPES)):
            return "has an output without a valid output_type"
        if output["output_type"] == "stream" and not _is_text(output.get("text")):
            return "stream output text is not text"
        if output["output_type"] in _BUNDLE_OUTPUTS and not isinstance(
            output.get("data", {}), dict
        ):
            return "output data invalid"
    return None


def _join(value: Any) -> Any:
    return "".join(value) if isinstance(value, list) else value


def _join_bundle(bundle: dict[str, Any]) -> dict[str, Any]:
    return {key: _join(value) if _is_text(value) else value for key, value in bundle.items()}


def join_lines(nb: Notebook) -> Notebook:
    """Rejoin line lists into strings, like ``nbformat.v4.rwbase.rejoin_lines`` (in place)."""
    for cell in nb["cells"]:
        cell["source"] = _join(cell["source"])
        for attachment in cell.get("attachments", {}).values():
            if isinstance(attachment, dict):
                attachment.update(_join_bundle(attachment))
        for output in cell.get("outputs", ()) if cell["cell_type"] == "code" else ():
            if output["output_type"] in _BUNDLE_OUTPUTS:
                output["data"] = _join_bundle(output.get("data", {}))
            elif "text" in output:
                output["text"] = _join(output["text"])
    return nb


def _split_bundle(bundle: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value.splitlines(True)
        if isinstance(value, str) and (key.startswith("text/") or key in _NON_TEXT_SPLIT_MIMES)
        else value
        for key, value in bundle.items()
    }


def _split_output(output: dict[str, Any]) -> dict[str, Any]:
    if output.get("output_type") in _BUNDLE_OUTPUTS and "data" in output:
        return {**output, "data": _split_bundle(output["data"])}
    if output.get("output_type") == "stream" and isinstance(output.get("text"), str):
        return {**output, "text": output["text"].splitlines(True)}
    return output


def split_cell(cell: Cell, *, keep_source: bool = False) -> Cell:
    """A copy of the cell with its texts split into lines as Jupyter writes them (its source
    kept as one string with ``keep_source``)."""
    out = dict(cell)
    if isinstance(out.get("source"), str) and not keep_source:
        out["source"] = out["source"].splitlines(True)
    if "attachments" in out:
        out["attachments"] = {
            name: _split_bundle(bundle) if isinstance(bundle, dict) else bundle
            for name, bundle in out["attachments"].items()
        }
    if out.get("cell_type") == "code" and "outputs" in out:
        out["outputs"] = [_split_output(output) for output in out["outputs"]]
    return out


def split_lines(nb: Notebook, string_sources: Container[int] = ()) -> Notebook:
    """Split strings into line lists like ``nbformat.v4.rwbase.split_lines`` (returns a copy);
    the sources of the cells at ``string_sources`` stay single strings."""
    cells = [
        split_cell(cell, keep_source=index in string_sources)
        for index, cell in enumerate(nb["cells"])
    ]
    return {**nb, "cells": cells}


def render_notebook(nb: Notebook, string_sources: Container[int] = ()) -> str:
    """The file text Jupyter would write for this notebook (but for the sources of the cells
    at ``string_sources``, kept as one string: the form the file had, see ``string_sources``)."""
    return dumps_like_jupyter(split_lines(nb, string_sources)) + "\n"


def string_sources(data: bytes | str) -> frozenset[int]:
    """The cells whose source a (valid) notebook file holds as one string rather than a list
    of lines, as scripts using ``json.dump`` write it: kept that way when the file is
    written again."""
    raw = _loads(data.encode() if isinstance(data, str) else data)
    cells = raw.get("cells", []) if isinstance(raw, dict) else []
    return frozenset(
        index
        for index, cell in enumerate(cells)
        if isinstance(cell, dict) and isinstance(cell.get("source"), str)
    )


def dumps_like_jupyter(value: Any) -> str:
    """``json.dumps(indent=1, sort_keys=True, ensure_ascii=False)``, fast.

    The stdlib encoder is pure Python as soon as ``indent`` is set (~100 ms for a 1.7 MB
    notebook). orjson writes the same JSON with an indent of 2, which we halve. It spells
    some floats differently ("1e-5" for Python's "1e-05", "0.000025" for "2.5e-05") and
    cannot hold integers beyond 64 bits: for those rare notebooks, the stdlib writes the file.
    """
    try:
        text = orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError:
        text = ""
    if not text or _has_float_orjson_spells_differently(value):
        return json.dumps(
            value, indent=1, sort_keys=True, ensure_ascii=False, separators=(",", ": ")
        )
    return _halve_indents(text)


def _has_float_orjson_spells_differently(value: Any) -> bool:
    """Is there a float that Python writes in exponent form ("2.5e-05", "1e+16")?

    orjson writes some of those otherwise ("0.000025", "1e-7"); every other float it writes
    as Python does. Walking the values is much cheaper than scanning the text (0.2 ms
    against 25 ms for a 1.7 MB notebook: the big strings are not looked into).
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is float:
            if "e" in repr(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _halve_indents(text: str) -> str:
    """Turn orjson's 2-space indents into 1-space ones.

    Every newline in the text is JSON's own (orjson escapes those in strings), so each run
    of spaces after one is an indent. Two ways, each fast for one shape of file: a regex
    with a callback per line (5 ms instead of 33 ms for 05.11, whose images make a few long
    lines), or a few full-text replaces (7 ms instead of 15 ms for 1000 short cells).
    """
    if text.count("\n") * _BYTES_PER_LINE_BREAK_EVEN < len(text):
        return _INDENT.sub(_half_indent, text)
    return _halve_by_replacing(text)


_BYTES_PER_LINE_BREAK_EVEN = 48  # a callback costs ~1 us, a replace ~20 ns per byte
_INDENT = re.compile(r"\n( +)")


def _half_indent(found: re.Match[str]) -> str:
    return "\n" + " " * (len(found.group(1)) // 2)


def _halve_by_replacing(text: str) -> str:
    """Deepest first, via a placeholder (orjson escapes every control character, so NUL
    cannot occur), so that a shallower pattern never matches the start of a deeper line."""
    depth = 0
    while "\n" + "  " * (depth + 1) in text:
        depth += 1
    for level in range(depth, 0, -1):
        text = text.replace("\n" + "  " * level, "\n" + "\0" * level)
    return text.replace("\0", " ")
