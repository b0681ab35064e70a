"""Version history benchmark: what remembering older versions costs, and a very stale save.

    .venv/bin/python scripts/bench_history.py [--writes 512] [--out FILE.json]

For 02.02 (33 KB), 05.11 (1.7 MB) and a generated 1000-cell notebook (nbformat 4.5), a peer
makes ``--writes`` edits, one line in a random cell each; the daemon's engine receives each
and writes the file (``render`` + ``remember_written``), so every version beyond the 8 kept
whole goes into the history as facts. Measured:

- the time of one daemon write, median, with the history filling (render included);
- the memory the engine holds once its 8 whole versions are filled, and what the history of
  the older versions adds by the end (tracemalloc, retained after a gc);
- one save of the buffer the editor read before the first write (a line typed into it):
  ingest time, with the version recalled from a log (an in-memory dict of doc states here;
  the daemon replays its sqlite log), and whether every remote line survived exactly once.

Prints a table and saves JSON (``--out``). CPU and memory only, no I/O in the timed parts.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from p2prtc.core.engine import NotebookEngine, text_digest
from p2prtc.core.notebook import Notebook, parse_notebook, render_notebook
from p2prtc.core.remembered import MAX_VERSIONS
from tests.nbgen import generated_notebook, upgrade_to_45

REPO_ROOT = Path(__file__).resolve().parents[1]

NOTEBOOKS = REPO_ROOT.parent / "shared" / "notebooks"


def cases(notebooks: Path) -> dict[str, Notebook]:
    found = {
        name: parse_notebook(upgrade_to_45((notebooks / f"{name}.ipynb").read_text()))
        for name in ("02.02-The-Basics-Of-NumPy-Arrays", "05.11-K-Means")
    }
    return {**found, "generated-1000-cells": generated_notebook(1000)}


def states_size(states: dict[bytes, bytes]) -> int:
    return sum(len(key) + len(value) for key, value in states.items())


def with_line(text: str, cell: int, line: str) -> str:
    nb = parse_notebook(text)
    nb["cells"][cell]["source"] += f"\n{line}"
    return render_notebook(nb)


def bench(notebook: Notebook, writes: int, rng: random.Random) -> dict[str, Any]:
    text = render_notebook(notebook)
    daemon = NotebookEngine.load(text)
    peer = NotebookEngine.from_updates([daemon.full_state()])
    peer.remember_written(text)
    states = {text_digest(text): daemon.full_state()}  # stands for the daemon's update log
    buffer, cells = text, len(notebook["cells"])
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    write_ms, lines = [], []
    whole_filled = 0
    for index in range(writes):
        if index == MAX_VERSIONS:
            gc.collect()
            whole_filled = tracemalloc.get_traced_memory()[0] - before - states_size(states)
        line = f"# remote line {index:04d}"
        update = peer.ingest(with_line(peer.render(), rng.randrange(cells), line)).update
        assert update is not None
        peer.remember_written(peer.render())
        lines.append(line)
        daemon.doc.apply_update(update)
        started = time.perf_counter()
        written = daemon.render()
        daemon.remember_written(written)
        write_ms.append((time.perf_counter() - started) * 1000)
        states[text_digest(written)] = daemon.full_state()
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    held -= states_size(states)  # the stand-in for the log is not the engine's memory

    save = with_line(buffer, 0, "# typed into the stale buffer")
    started = time.perf_counter()
    result = daemon.ingest(save, recall=states.get)
    ingest_ms = (time.perf_counter() - started) * 1000
    final = daemon.render()
    kept = all(final.count(line) == 1 for line in lines) and "stale buffer" in final
    return {
        "cells": cells,
        "file_bytes": len(text.encode()),
        "writes": writes,
        "write_ms_median": statistics.median(write_ms),
        "write_ms_first_8": statistics.median(write_ms[:8]),
        "write_ms_last_64": statistics.median(write_ms[-64:]),
        "engine_mib_8_versions": round(whole_filled / 2**20, 1),
        "history_mib": round((held - whole_filled) / 2**20, 1),
        "stale_ingest_ms": ingest_ms,
        "stale_save_changed_doc": result.update is not None,
        "remote_lines_kept_once": kept,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=512)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench-results/bench_history.json")
    args = parser.parse_args()
    results = {
        name: bench(notebook, args.writes, random.Random(args.seed))
        for name, notebook in cases(args.notebooks).items()
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(
        "| notebook | cells | writes | write ms (first 8 / last 64) | engine MiB (8 whole) "
        "| + history MiB | stale save ingest ms | remote lines kept once |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, r in results.items():
        print(
            f"| {name} | {r['cells']} | {r['writes']} | {r['write_ms_first_8']:.1f} / "
            f"{r['write_ms_last_64']:.1f} | {r['engine_mib_8_versions']} | {r['history_mib']} | "
            f"{r['stale_ingest_ms']:.0f} | {r['remote_lines_kept_once']} |"
        )
    print(f"saved {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
