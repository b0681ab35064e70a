"""Engine benchmark: p2prtc's ingest and render against jupyter_ydoc's YNotebook, same run.

    .venv/bin/python scripts/bench_engine.py [--saves 40] [--out bench-results/bench_engine.json]

For 02.02 (33 KB), 05.11 (1.7 MB) and a generated 1000-cell notebook, all as nbformat 4.5
with cell ids (so that YNotebook.set can keep cells by id too), a series of saves that each
insert one character in a random cell is timed:

- p2prtc: ``NotebookEngine.ingest(data)`` of the file's bytes, as the daemon reads them
  (parse, validate, pick the base version, diff, apply, capture the update), then
  ``render()`` (the file text for the doc);
- jupyter_ydoc: ``YNotebook.set(nb)`` of the edited notebook, already parsed (the file's
  parsing is not counted), into a YNotebook that holds the previous one, then
  ``YNotebook.get()``; and, as Jupyter's server does when a file changes on disk,
  ``nbformat.reads`` of the file followed by ``YNotebook.set``;
- the size of each save's update (what goes to the peers), for both.

The 4.4 originals (no cell ids: cells matched by alignment) are timed for p2prtc too.
Prints a table and saves JSON (``--out``). CPU only, no I/O in the timed parts.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import nbformat
from jupyter_ydoc import YNotebook
from pycrdt import Doc, TransactionEvent

from p2prtc.core.engine import NotebookEngine
from p2prtc.core.notebook import Notebook, parse_notebook, render_notebook
from tests.nbgen import generated_notebook, upgrade_to_45

REPO_ROOT = Path(__file__).resolve().parents[1]

NOTEBOOKS = REPO_ROOT.parent / "shared" / "notebooks"
WARMUP_SAVES = 3
TARGETS = {
    "ingest_ms_1000_cells": 25.0,
    "ingest_speedup_vs_ynotebook_set": 2.0,
    "render_ms_1000_cells": 40.0,
    "update_bytes": 100,
}


@dataclass(frozen=True)
class Case:
    name: str
    notebook: Notebook  # joined form
    compare: bool  # time YNotebook too (files with cell ids)

    @property
    def text(self) -> str:
        return render_notebook(self.notebook)


def cases(notebooks: Path, seed: int) -> list[Case]:
    small = (notebooks / "02.02-The-Basics-Of-NumPy-Arrays.ipynb").read_text(encoding="utf-8")
    big = (notebooks / "05.11-K-Means.ipynb").read_text(encoding="utf-8")
    return [
        Case("02.02 (33 KB)", parse_notebook(upgrade_to_45(small)), compare=True),
        Case("05.11 (1.7 MB)", parse_notebook(upgrade_to_45(big)), compare=True),
        Case("generated 1000 cells", generated_notebook(1000, seed=seed), compare=True),
        Case("02.02, 4.4 no ids", parse_notebook(small), compare=False),
        Case("05.11, 4.4 no ids", parse_notebook(big), compare=False),
    ]


def one_char_saves(nb: Notebook, count: int, rng: random.Random) -> Iterator[Notebook]:
    """Successive saves, each one character more than the last, in a random cell."""
    current = nb
    for _ in range(count):
        cells = [dict(cell) for cell in current["cells"]]
        cell = rng.choice(cells)
        at = rng.randint(0, len(cell["source"]))
        cell["source"] = cell["source"][:at] + rng.choice("abcxyz(=") + cell["source"][at:]
        current = {**current, "cells": cells}
        yield current


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = action()
    return (time.perf_counter() - start) * 1000, result


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "p90": statistics.quantiles(ordered, n=10, method="inclusive")[-1],
        "max": ordered[-1],
    }


def bench_p2prtc(case: Case, saves: list[Notebook]) -> dict[str, Any]:
    engine = NotebookEngine.load(case.text)
    texts = [render_notebook(nb) for nb in saves]
    ingest_ms, render_ms, sizes = [], [], []
    for index, text in enumerate(texts):
        data = text.encode()
        elapsed, result = timed(functools.partial(engine.ingest, data))
        if result.update is None or result.needs_write:
            raise RuntimeError(f"{case.name}: a one-character save gave {result}")
        rendered_ms, rendered = timed(engine.render)
        if rendered != text:
            raise RuntimeError(f"{case.name}: the render differs from the save")
        if index >= WARMUP_SAVES:
            ingest_ms.append(elapsed)
            render_ms.append(rendered_ms)
            sizes.append(len(result.update))
    return {
        "ingest_ms": summary(ingest_ms),
        "render_ms": summary(render_ms),
        "update_bytes": summary([float(size) for size in sizes]),
    }


def bench_ynotebook(case: Case, saves: list[Notebook]) -> dict[str, Any]:
    doc: Doc[Any] = Doc()
    ynotebook = YNotebook(doc)
    ynotebook.set(case.notebook)
    updates: list[bytes] = []

    def record(event: TransactionEvent) -> None:
        updates.append(event.update)

    subscription = doc.observe(record)
    set_ms, get_ms, sizes = [], [], []
    for index, nb in enumerate(saves):
        updates.clear()
        elapsed, _ = timed(functools.partial(ynotebook.set, nb))
        read_ms, _ = timed(ynotebook.get)
        if index >= WARMUP_SAVES:
            set_ms.append(elapsed)
            get_ms.append(read_ms)
            sizes.append(float(sum(map(len, updates))))
    doc.unobserve(subscription)
    return {
        "set_ms": summary(set_ms),
        "get_ms": summary(get_ms),
        "update_bytes": summary(sizes),
        "reads_and_set_ms": summary(reads_and_set(case, saves)),
    }


def reads_and_set(case: Case, saves: list[Notebook]) -> list[float]:
    """nbformat.reads of the saved file, then YNotebook.set: Jupyter's way with a file."""
    ynotebook = YNotebook(Doc())
    ynotebook.set(case.notebook)
    times = []
    for index, text in enumerate(render_notebook(nb) for nb in saves):
        elapsed, _ = timed(functools.partial(read_into, ynotebook, text))
        if index >= WARMUP_SAVES:
            times.append(elapsed)
    return times


def read_into(ynotebook: YNotebook, text: str) -> None:
    ynotebook.set(nbformat.reads(text, as_version=4))  # type: ignore[no-untyped-call]


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    results = []
    for case in cases(args.notebooks, args.seed):
        saves = list(one_char_saves(case.notebook, args.saves + WARMUP_SAVES, rng))
        row: dict[str, Any] = {
            "name": case.name,
            "cells": len(case.notebook["cells"]),
            "bytes": len(case.text.encode()),
            "p2prtc": bench_p2prtc(case, saves),
        }
        if case.compare:
            row["ynotebook"] = bench_ynotebook(case, saves)
        results.append(row)
        print(f"  {case.name}: done", file=sys.stderr)
    return {"cases": results}


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "pycrdt": version("pycrdt"),
        "jupyter_ydoc": version("jupyter-ydoc"),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }


def checks(results: dict[str, Any]) -> list[str]:
    by_name = {row["name"]: row for row in results["cases"]}
    big = by_name["generated 1000 cells"]
    ingest = big["p2prtc"]["ingest_ms"]["median"]
    speedups = [
        row["ynotebook"]["set_ms"]["median"] / row["p2prtc"]["ingest_ms"]["median"]
        for row in results["cases"]
        if "ynotebook" in row
    ]
    largest_update = max(row["p2prtc"]["update_bytes"]["median"] for row in results["cases"])
    render = big["p2prtc"]["render_ms"]["median"]
    lines = [
        ("ingest, 1000 cells", ingest, "<=", TARGETS["ingest_ms_1000_cells"], "ms"),
        ("ingest speedup vs YNotebook.set (min)", min(speedups), ">=", 2.0, "x"),
        ("render, 1000 cells", render, "<=", TARGETS["render_ms_1000_cells"], "ms"),
        ("update of a 1-char save (median)", largest_update, "<", 100, "bytes"),
    ]
    report = []
    for label, value, op, target, unit in lines:
        ok = value <= target if op == "<=" else value >= target if op == ">=" else value < target
        report.append(f"{'ok  ' if ok else 'MISS'} {label}: {value:.1f} {unit} ({op} {target})")
    return report


def pair(values: dict[str, float]) -> str:
    return f"{values['median']:.2f} / {values['p90']:.2f}"


def table(results: dict[str, Any]) -> str:
    header = (
        "| notebook | cells | p2prtc ingest ms (median / p90) | YNotebook.set ms | speedup "
        "| nbformat.reads + set ms | p2prtc render ms | YNotebook.get ms "
        "| update bytes p2prtc / YNotebook |"
    )
    rows = [header, "|" + " --- |" * 9]
    for row in results["cases"]:
        ours, theirs = row["p2prtc"], row.get("ynotebook")
        ingest = ours["ingest_ms"]
        cells = [
            row["name"],
            str(row["cells"]),
            pair(ingest),
            pair(theirs["set_ms"]) if theirs else "-",
            f"{theirs['set_ms']['median'] / ingest['median']:.1f}x" if theirs else "-",
            pair(theirs["reads_and_set_ms"]) if theirs else "-",
            pair(ours["render_ms"]),
            pair(theirs["get_ms"]) if theirs else "-",
            f"{ours['update_bytes']['median']:.0f} / "
            + (f"{theirs['update_bytes']['median']:.0f}" if theirs else "-"),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def saves_arguments(doc: str, results_name: str) -> argparse.Namespace:
    """The options of a benchmark of one-character saves (this one, bench_stamps.py)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--saves", type=int, default=40, help="timed saves per notebook")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench-results" / results_name)
    return parser.parse_args()


def measured(
    run: Callable[[argparse.Namespace], dict[str, Any]], args: argparse.Namespace
) -> dict[str, Any]:
    """``run(args)``'s results, with the machine and its load before and after."""
    before = machine()
    results = run(args)
    results["machine"] = {**before, "load_average_after": os.getloadavg()}
    return results


def save_results(out: Path, results: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"saved {out}", file=sys.stderr)


def main() -> None:
    args = saves_arguments(__doc__ or "", "bench_engine.json")
    results = measured(run, args)
    results["checks"] = checks(results)
    save_results(args.out, results)
    print(table(results))
    print("\n".join(results["checks"]))


if __name__ == "__main__":
    main()
