"""Keystroke in a JupyterLab tab on machine A -> the same cell in a tab on machine B.

    .venv/bin/python scripts/bench_jupyter.py [--keystrokes 200] [--stock-keystrokes 10]

Two real daemons on loopback (A shares 02.02, B joins), one real Jupyter server with
jupyter-collaboration per machine, tabs played by pycrdt websocket clients (as in
tests/test_jupyter.py). Measured, in the same run:

- p2prtc: the servers run the p2prtc extension (rooms attached to the daemons): one character
  typed in A's tab until B's tab holds it, ``--keystrokes`` times (20 ms apart, as typing);
  and until B's file holds it (the daemon writes every change);
- stock: the same servers restarted without the extension (plain jupyter-collaboration:
  rooms save the file after 1 s, the daemons sync the file, B's room polls it every 1 s and
  reloads it): the same measure, ``--stock-keystrokes`` times (each takes seconds).

Prints a table and saves bench-results/bench_jupyter.json (``--out``). Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_e2e import environment, print_table, save_record

from tests.daemons import Pair, synced_pair
from tests.jupyter_servers import Tab, jupyter_server, open_tab

REPO_ROOT = Path(__file__).resolve().parents[1]

NOTEBOOKS = REPO_ROOT.parent / "shared" / "notebooks"
NOTEBOOK = "02.02-The-Basics-Of-NumPy-Arrays.ipynb"
RESULTS = REPO_ROOT / "bench-results" / "bench_jupyter.json"
TARGETS = {"p2prtc_tab_p50_ms": 50.0, "p2prtc_tab_p99_ms": 150.0}
KEYSTROKE_TIMEOUT_S = 15.0
TYPING_GAP_S = 0.02
CELL = 1


async def arrival(tab: Tab, expected: str, deadline: float) -> None:
    """Until cell CELL of ``tab`` ends with ``expected`` (woken by the tab's doc events; a stock
    room's reload may replace the cell, so it is looked up again each time)."""
    changed = asyncio.Event()
    doc = tab.notebook.ydoc
    subscription = doc.observe(lambda _: changed.set())
    try:
        while not tab.source(CELL).endswith(expected):
            await asyncio.wait_for(changed.wait(), max(0.0, deadline - time.monotonic()))
            changed.clear()
    finally:
        doc.unobserve(subscription)


async def file_arrival(path: Path, expected: str, deadline: float) -> None:
    while expected not in path.read_text():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path.name} never held {expected!r}")
        await asyncio.sleep(0.0005)


def summary(samples: list[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "count": len(ordered),
        "p50_ms": statistics.median(ordered),
        "p99_ms": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
        "max_ms": ordered[-1],
        "samples_ms": [round(sample, 3) for sample in samples],
    }


async def keystrokes(
    tab_a: Tab, tab_b: Tab, b_file: Path | None, count: int, tag: str
) -> dict[str, Any]:
    """Type ``count`` characters at the end of cell CELL in A's tab; time each to B."""
    to_tab: list[float] = []
    to_file: list[float] = []
    typed = f"\n# {tag}: "
    tab_a.type(CELL, typed)
    await arrival(tab_b, typed, time.monotonic() + 2 * KEYSTROKE_TIMEOUT_S)
    for index in range(count):
        character = "abcdefghijklmnopqrstuvwxyz"[index % 26]
        typed += character
        started = time.monotonic()
        deadline = started + KEYSTROKE_TIMEOUT_S
        tab_a.type(CELL, character)
        await arrival(tab_b, typed, deadline)
        to_tab.append((time.monotonic() - started) * 1000)
        if b_file is not None:
            await file_arrival(b_file, typed.splitlines()[-1], deadline)
            to_file.append((time.monotonic() - started) * 1000)
        await asyncio.sleep(TYPING_GAP_S)
    results = {"tab": summary(to_tab)}
    if to_file:
        results["file"] = summary(to_file)
    return results


async def measure(root: Path, pair: Pair, count: int, *, stock: bool) -> dict[str, Any]:
    name = "stock" if stock else "p2prtc"
    with (
        jupyter_server(pair.a.workdir, pair.a, root / f"{name}-a", stock=stock) as a,
        jupyter_server(pair.b.workdir, pair.b, root / f"{name}-b", stock=stock) as b,
    ):
        async with (
            open_tab(a.address, pair.a_file.name) as tab_a,
            open_tab(b.address, pair.b_file.name) as tab_b,
        ):
            b_file = None if stock else pair.b_file
            results = await keystrokes(tab_a, tab_b, b_file, count, name)
            # Let stock rooms save what was typed before they stop (their 1 s delay).
            await asyncio.sleep(2.5 if stock else 0.2)
            return results


def figures(results: dict[str, Any]) -> dict[str, float]:
    values = {
        "p2prtc_tab_p50_ms": results["p2prtc"]["tab"]["p50_ms"],
        "p2prtc_tab_p99_ms": results["p2prtc"]["tab"]["p99_ms"],
        "p2prtc_file_p50_ms": results["p2prtc"]["file"]["p50_ms"],
        "p2prtc_file_p99_ms": results["p2prtc"]["file"]["p99_ms"],
    }
    if "stock" in results:
        values["stock_tab_p50_ms"] = results["stock"]["tab"]["p50_ms"]
        values["stock_tab_p99_ms"] = results["stock"]["tab"]["p99_ms"]
    return values


async def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    with synced_pair(root / "daemons", NOTEBOOKS / NOTEBOOK) as pair:
        results = {"p2prtc": await measure(root, pair, args.keystrokes, stock=False)}
        if args.stock_keystrokes:
            results["stock"] = await measure(root, pair, args.stock_keystrokes, stock=True)
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keystrokes", type=int, default=200)
    parser.add_argument("--stock-keystrokes", type=int, default=10, help="0: skip stock")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to save the JSON")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="p2prtc-bench-jupyter-"))
    started = environment()
    try:
        results = asyncio.run(run(args, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    values = figures(results)
    print_table(values, TARGETS)
    save_record(args.out, "scripts/bench_jupyter.py", started, TARGETS, values, results)


if __name__ == "__main__":
    main()
