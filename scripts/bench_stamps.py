"""What edit stamps cost (core/edits.py): a save's ingest and update, stamped or not.

    .venv/bin/python scripts/bench_stamps.py [--saves 40] [--out bench-results/bench_stamps.json]

The daemon stamps every save (the changed cells, its id, what it had seen), so that members
can tell who changed what and which edits were concurrent. For the notebooks of
scripts/bench_engine.py, the same one-character saves are ingested twice, by an engine that
stamps (as the daemon does) and by one that does not (as before): the ingest time (median,
p90) and the update's size (what goes to the peers) of each. Then the change log: the time
to answer ``p2prtc log -n 2000`` and the status query from a full log (store only),
medians of a few runs.

Prints a table and saves JSON (``--out``). CPU only; the store part uses a temp folder.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from p2prtc.adapters.store import MAX_LOG_ENTRIES, LogEntry, UpdateStore
from p2prtc.core.edits import Author
from p2prtc.core.engine import NotebookEngine
from p2prtc.core.notebook import render_notebook
from p2prtc.daemon import changelog
from scripts.bench_engine import (
    cases,
    measured,
    one_char_saves,
    save_results,
    saves_arguments,
    summary,
    timed,
)

MEMBER = "d0d0d0d0d0d0d0d0"


def bench_case(text: str, saves: list[str]) -> dict[str, Any]:
    """Both engines take each save in turn, so a load change on the machine hits both."""
    engines = {"plain": NotebookEngine.load(text), "stamped": NotebookEngine.load(text)}
    ingest_ms: dict[str, list[float]] = {name: [] for name in engines}
    sizes: dict[str, list[int]] = {name: [] for name in engines}
    for save in saves:
        for name, engine in engines.items():
            author = Author(MEMBER, time.time()) if name == "stamped" else None
            ingest = functools.partial(engine.ingest, save.encode(), author=author)
            elapsed, result = timed(ingest)
            if result.update is None:
                raise RuntimeError("a one-character save changed nothing")
            ingest_ms[name].append(elapsed)
            sizes[name].append(len(result.update))
    return {
        name: {"ingest_ms": summary(times), "update_bytes": statistics.median(sizes[name])}
        for name, times in ingest_ms.items()
    }


def bench_log(folder: Path) -> dict[str, float]:
    """A full change log: `log -n 2000` and status's query of it."""
    detail = json.dumps(
        {
            "cells": [{"id": "c" * 36, "index": 12, "first_line": "x = 1", "parts": ["source"]}],
            "concurrent": [],
        }
    )
    with UpdateStore(folder / "doc.sqlite") as store:
        for index in range(MAX_LOG_ENTRIES):
            entry = LogEntry(0, time.time(), MEMBER, "save", detail, index % 100 == 0)
            store.append(b"\x00\x00", [entry])
        log_ms = statistics.median(
            timed(lambda: changelog.log_answer(store, MAX_LOG_ENTRIES))[0] for _ in range(5)
        )
        status_ms = statistics.median(
            timed(lambda: changelog.recent_concurrent(store, time.time()))[0] for _ in range(20)
        )
    return {"log_2000_ms": log_ms, "status_query_ms": status_ms}


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    results: dict[str, Any] = {"cases": {}}
    for case in cases(args.notebooks, args.seed):
        saves = [render_notebook(nb) for nb in one_char_saves(case.notebook, args.saves, rng)]
        results["cases"][case.name] = bench_case(case.text, saves)
    with tempfile.TemporaryDirectory() as folder:
        results["log"] = bench_log(Path(folder))
    return results


def table(results: dict[str, Any]) -> str:
    header = f"{'ingest ms plain':>16} {'stamped':>8} {'bytes plain':>12} {'stamped':>8}"
    lines = [f"{'notebook':24} {header}"]
    for name, case in results["cases"].items():
        plain, stamped = case["plain"], case["stamped"]
        lines.append(
            f"{name:24} {plain['ingest_ms']['median']:16.2f} {stamped['ingest_ms']['median']:8.2f}"
            f" {plain['update_bytes']:12.0f} {stamped['update_bytes']:8.0f}"
        )
    log = results["log"]
    lines.append(
        f"log -n {MAX_LOG_ENTRIES}: {log['log_2000_ms']:.1f} ms;"
        f" status's query of a full log: {log['status_query_ms']:.2f} ms"
    )
    return "\n".join(lines)


def main() -> None:
    args = saves_arguments(__doc__ or "", "bench_stamps.json")
    results = measured(run, args)
    save_results(args.out, results)
    print(table(results))


if __name__ == "__main__":
    main()
