"""Notebook files: byte-exact round trips like Jupyter, agreement with nbformat, bad input.

Bad input of any kind must end in a P2PError subclass with a readable message (the daemon
reports it and waits for the next save); nothing else may escape, and nothing that parses
may break the engine afterwards.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nbgen import (
    Notebook,
    code_cell,
    dump,
    json_text,
    json_value,
    markdown_cell,
    nbformat_node,
    nbformat_reads,
    nbformat_v3_text,
    nbformat_writes,
    notebook,
    sample_notebook,
    stream,
    tiny_png,
    upgrade_to_45,
)

from p2prtc.core.engine import NotebookEngine
from p2prtc.core.notebook import (
    InvalidNotebook,
    NotebookTooLarge,
    UnsupportedNotebookFormat,
    parse_notebook,
    render_notebook,
)
from p2prtc.errors import P2PError


def shared_notebooks(notebooks_dir: Path) -> list[tuple[str, str]]:
    paths = sorted(notebooks_dir.glob("*.ipynb"))
    assert len(paths) >= 5
    return [(path.name, path.read_text(encoding="utf-8")) for path in paths]


@pytest.fixture(scope="module")
def real_texts(notebooks_dir: Path) -> list[tuple[str, str]]:
    """Every shared notebook as it is (4.4) and upgraded to 4.5 with ids."""
    texts = shared_notebooks(notebooks_dir)
    return texts + [(f"{name} (4.5)", upgrade_to_45(text)) for name, text in texts]


# --- round trips -------------------------------------------------------------------------------


def test_real_notebooks_round_trip_byte_for_byte(real_texts: list[tuple[str, str]]) -> None:
    for name, text in real_texts:
        assert render_notebook(parse_notebook(text)) == text, name
        assert render_notebook(parse_notebook(text.encode())) == text, name


def test_real_notebooks_round_trip_through_the_doc(real_texts: list[tuple[str, str]]) -> None:
    for name, text in real_texts:
        sharer = NotebookEngine.load(text)
        assert sharer.render() == text, name
        joiner = NotebookEngine.from_updates([sharer.full_state()])
        assert joiner.render() == text, name


def test_parse_agrees_with_nbformat(real_texts: list[tuple[str, str]]) -> None:
    for name, text in real_texts:
        assert parse_notebook(text) == nbformat_reads(text), name


def test_render_agrees_with_nbformat(real_texts: list[tuple[str, str]]) -> None:
    for name, text in real_texts:
        assert render_notebook(parse_notebook(text)) == nbformat_writes(nbformat_node(text)), name


def test_sample_notebooks_are_what_their_script_writes(notebooks_dir: Path) -> None:
    script = Path(__file__).resolve().parents[1] / "scripts" / "make_test_notebooks.py"
    result = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert script.stem in (notebooks_dir / "README.md").read_text()


def test_generated_notebooks_render_like_jupyter() -> None:
    for minor in range(6):
        nb = sample_notebook(minor=minor)
        text = dump(nb)
        assert render_notebook(nb) == text
        assert parse_notebook(text) == nb
        assert nbformat_writes(nbformat_node(text)) == text


@pytest.mark.parametrize("number", [1e-05, 2.5e-05, 7.052908053856948e-05, 1e-07, 1.5e300, 1e16])
def test_floats_that_orjson_writes_differently(number: float) -> None:
    nb = notebook([code_cell("x", metadata={"duration": number, "neg": -number, "n": -3})])
    text = dump(nb)
    assert f'"duration": {number!r}' in text
    assert render_notebook(parse_notebook(text)) == text


@pytest.mark.parametrize("number", [2**63, 2**64 - 1, 2**80, -(2**63) - 1])
def test_integers_beyond_64_bits_become_floats(number: int) -> None:
    # The doc (Yrs, like JavaScript) cannot hold them; pycrdt would abort the process.
    nb = notebook([code_cell("x", metadata={"seed": number, "list": [number]})])

    parsed = parse_notebook(dump(nb))
    engine = NotebookEngine.load(dump(nb))

    assert parsed["cells"][0]["metadata"] == {"seed": float(number), "list": [float(number)]}
    assert float(engine.notebook()["cells"][0]["metadata"]["seed"]) == float(number)
    parse_notebook(engine.render())


def test_integers_within_64_bits_stay_exact() -> None:
    nb = notebook([code_cell("x", metadata={"max": 2**63 - 1, "min": -(2**63)})])
    engine = NotebookEngine.load(dump(nb))
    assert engine.render() == dump(nb)


def test_number_too_large_for_a_float() -> None:
    text = dump(sample_notebook()).replace('"tags"', f'"big": {10**400}, "tags"')
    assert "too large" in assert_rejected(text, InvalidNotebook)


def test_text_that_looks_like_an_exponent_number() -> None:
    nb = notebook([markdown_cell('"a": 1e5\n    2E-3 in a string\n')])
    assert render_notebook(nb) == dump(nb)


@settings(max_examples=150, deadline=None)
@given(
    sources=st.lists(json_text, min_size=0, max_size=4),
    stream_text=json_text,
    metadata=st.dictionaries(json_text, json_value, max_size=4),
    minor=st.integers(0, 5),
)
def test_render_matches_the_stdlib_writer(
    sources: list[str], stream_text: str, metadata: dict[str, Any], minor: int
) -> None:
    cells = [code_cell(source, [stream(stream_text)], metadata=metadata) for source in sources]
    nb = notebook(cells, minor=minor, metadata=metadata)

    text = render_notebook(nb)

    assert text == dump(nb)
    assert parse_notebook(text) == json.loads(json.dumps(nb))


# --- bad input ---------------------------------------------------------------------------------


def assert_rejected(
    data: bytes | str, error: type[P2PError], *, max_bytes: int | None = None
) -> str:
    """The input is refused with exactly this error; returns its message."""
    with pytest.raises(P2PError) as caught:
        if max_bytes is None:
            parse_notebook(data)
        else:
            parse_notebook(data, max_bytes=max_bytes)
    assert type(caught.value) is error
    message = str(caught.value)
    first_line = (error.__doc__ or "").strip()
    assert message.startswith(first_line) and "\n" not in message
    return message


@pytest.mark.parametrize(
    "data",
    [
        "",
        "   \n",
        "{",
        '{"cells": []',
        "not json at all",
        '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5,}',
        "\ufeff" + dump(sample_notebook()),  # a byte order mark
        "[" * 100_000 + "]" * 100_000,
    ],
    ids=["empty", "blank", "brace", "unclosed", "words", "trailing-comma", "bom", "deep"],
)
def test_invalid_json(data: str) -> None:
    assert_rejected(data, InvalidNotebook)


def test_invalid_json_message_says_where() -> None:
    message = assert_rejected('{"cells": [}', InvalidNotebook)
    assert "not valid JSON" in message
    assert "line 1" in message


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ([], InvalidNotebook),
        ("a string", InvalidNotebook),
        (42, InvalidNotebook),
        (None, InvalidNotebook),
        ({}, InvalidNotebook),
        ({"name": "package.json", "version": "1.0"}, InvalidNotebook),
        ({"cells": [], "metadata": {}, "nbformat": 4}, InvalidNotebook),
        ({"cells": {}, "metadata": {}, "nbformat": 4, "nbformat_minor": 4}, InvalidNotebook),
        ({"cells": [], "metadata": [], "nbformat": 4, "nbformat_minor": 4}, InvalidNotebook),
        ({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": "4"}, InvalidNotebook),
        ({"cells": [1], "metadata": {}, "nbformat": 4, "nbformat_minor": 4}, InvalidNotebook),
        (
            {"cells": [], "metadata": {}, "nbformat": 5, "nbformat_minor": 0},
            UnsupportedNotebookFormat,
        ),
    ],
)
def test_json_that_is_not_a_notebook(value: Any, error: type[P2PError]) -> None:
    assert_rejected(json.dumps(value), error)


def broken_cell(key: str, value: Any) -> Notebook:
    nb = sample_notebook()
    target = nb["cells"][1]
    if key.startswith("output."):
        target = target["outputs"][0]
        key = key.removeprefix("output.")
    target[key] = value
    return nb


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("cell_type", "heading"),
        ("source", 12),
        ("source", ["a", 1]),
        ("metadata", []),
        ("id", 7),
        ("attachments", []),
        ("execution_count", "1"),
        ("execution_count", True),
        ("outputs", {}),
        ("outputs", ["text"]),
        ("output.output_type", "picture"),
        ("output.text", None),
        ("output.text", {"a": 1}),
    ],
)
def test_notebook_with_a_broken_cell(key: str, value: Any) -> None:
    message = assert_rejected(json.dumps(broken_cell(key, value)), InvalidNotebook)
    assert "cell 1" in message


def test_unpaired_surrogate_is_rejected() -> None:
    text = dump(sample_notebook()).replace('"x.sum()"', '"x.sum()\\ud800"')
    assert "surrogate" in assert_rejected(text, InvalidNotebook)


def test_paired_surrogate_escapes_are_fine() -> None:
    text = dump(sample_notebook()).replace('"x.sum()"', '"x.sum() \\ud83d\\ude00"')
    assert parse_notebook(text)["cells"][2]["source"] == "x.sum() 😀"


def test_binary_garbage() -> None:
    rng = random.Random(7)
    assert "UTF-8" in assert_rejected(bytes([0xFF, 0xFE]) + b"{}", InvalidNotebook)
    assert_rejected(tiny_png(8, 8).encode(), InvalidNotebook)
    for _ in range(50):
        assert_rejected(rng.randbytes(rng.randint(1, 2000)), InvalidNotebook)


def test_truncated_files(real_texts: list[tuple[str, str]]) -> None:
    rng = random.Random(3)
    for _, text in real_texts[:5]:
        data = text.encode()
        for cut in [1, len(data) // 2, len(data) - 3, *rng.sample(range(2, len(data) - 3), 20)]:
            assert_rejected(data[:cut], InvalidNotebook)


def test_too_large() -> None:
    text = dump(sample_notebook())
    message = assert_rejected(text, NotebookTooLarge, max_bytes=len(text.encode()) - 1)
    assert str(len(text.encode())) in message
    assert parse_notebook(text, max_bytes=len(text.encode()))


def test_too_large_by_default() -> None:
    huge = b'{"cells": [], "metadata": {"x": "' + b"a" * (64 * 1024 * 1024) + b'"}}'
    assert_rejected(huge, NotebookTooLarge)


@pytest.mark.parametrize("major", [3, 5, "4", None])
def test_unsupported_format(major: Any) -> None:
    value = {"worksheets": [{"cells": []}], "metadata": {}, "nbformat": major, "nbformat_minor": 0}
    message = assert_rejected(json.dumps(value), UnsupportedNotebookFormat)
    assert "nbformat 4" in message


def test_nbformat_3_file_from_nbformat() -> None:
    assert_rejected(nbformat_v3_text(), UnsupportedNotebookFormat)


# --- fuzzing: whatever parses must be safe for the engine --------------------------------------


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths_of(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths_of(item, (*prefix, index))
    return found


DELETE = object()


def replace_at(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    """A copy of ``value`` with the item at ``path`` replaced by ``new`` (or deleted)."""
    head, rest = path[0], path[1:]
    items = value.items() if isinstance(value, dict) else enumerate(value)
    changed = [
        (key, replace_at(item, rest, new) if rest else new) if key == head else (key, item)
        for key, item in items
    ]
    kept = [(key, item) for key, item in changed if item is not DELETE]
    return dict(kept) if isinstance(value, dict) else [item for _, item in kept]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), minor=st.sampled_from([4, 5]))
def test_mutated_notebooks_are_refused_or_safe(data: st.DataObject, minor: int) -> None:
    original = sample_notebook(minor=minor)
    path = data.draw(st.sampled_from(paths_of(original)[1:]), label="path")
    new_value = data.draw(json_value | st.just(DELETE), label="value")
    text = json.dumps(replace_at(original, path, new_value))
    try:
        parsed = parse_notebook(text)
    except P2PError:
        return
    assert parsed["nbformat"] == 4

    loaded = NotebookEngine.load(text)
    parse_notebook(loaded.render())
    sharer = NotebookEngine.load(dump(original))
    joiner = NotebookEngine.from_updates([sharer.full_state()])
    for save in (text, dump(original)):  # to the odd notebook and back
        result = sharer.ingest(save)
        if result.update is not None:
            joiner.doc.apply_update(result.update)
        # The same content (each machine's file keeps its own form of the sources).
        assert parse_notebook(joiner.render()) == parse_notebook(sharer.render())
    assert parse_notebook(sharer.render()) == parse_notebook(dump(original))
