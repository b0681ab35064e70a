"""Benchmark a save's event: from an editor's rename to the FileWatcher's event.

    .venv/bin/python scripts/bench_watcher.py [--saves 200] [--out bench-results/bench_watcher.json]

Each save writes a temp file and renames it over a 33 KB notebook, as Jupyter does; timed
from the rename to the event in the daemon's watcher, inotify (Linux, read directly) and the
watchfiles fallback alternately. Also the watcher's CPU while idle (5 s, no saves). Prints
median / p99 / max and saves JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from p2prtc.adapters.watcher import FileWatcher
from scripts.bench_engine import save_results

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT.parent / "shared" / "notebooks" / "02.02-The-Basics-Of-NumPy-Arrays.ipynb"
RESULTS = REPO_ROOT / "bench-results" / "bench_watcher.json"
BACKENDS = {"inotify": True, "watchfiles": False}
IDLE_S = 5.0
EVENT_BOUND_S = 5.0


async def save_latencies(folder: Path, use_inotify: bool, saves: int) -> list[float]:
    target = folder / "nb.ipynb"
    data = NOTEBOOK.read_bytes()
    target.write_bytes(data)
    latencies = []
    async with FileWatcher({target}, use_inotify=use_inotify) as watcher:
        for _ in range(saves):
            temp = folder / ".~nb.ipynb"
            temp.write_bytes(data)
            start = time.perf_counter()
            os.replace(temp, target)
            await asyncio.wait_for(anext(watcher), EVENT_BOUND_S)
            latencies.append((time.perf_counter() - start) * 1000)
            await asyncio.sleep(0.01)  # separate saves, as an editor's are
    return latencies


async def idle_cpu_percent(folder: Path, use_inotify: bool) -> float:
    async with FileWatcher({folder / "nb.ipynb"}, use_inotify=use_inotify):
        before, start = time.process_time(), time.perf_counter()
        await asyncio.sleep(IDLE_S)
        return 100 * (time.process_time() - before) / (time.perf_counter() - start)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def bench(saves: int) -> dict[str, Any]:
    results: dict[str, Any] = {"load_average_before": os.getloadavg(), "backends": {}}
    with tempfile.TemporaryDirectory(prefix="bench-watcher-") as tmp:
        for name, use_inotify in BACKENDS.items():
            latencies = await save_latencies(Path(tmp), use_inotify, saves)
            results["backends"][name] = {
                "median_ms": statistics.median(latencies),
                "p99_ms": percentile(latencies, 0.99),
                "max_ms": max(latencies),
                "idle_cpu_percent": await idle_cpu_percent(Path(tmp), use_inotify),
                "samples_ms": latencies,
            }
    results["load_average_after"] = os.getloadavg()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=200)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = asyncio.run(bench(args.saves))
    save_results(args.out, results)
    print("| watcher | median ms | p99 ms | max ms | idle CPU % |")
    print("| --- | --- | --- | --- | --- |")
    for name, row in results["backends"].items():
        print(
            f"| {name} | {row['median_ms']:.2f} | {row['p99_ms']:.2f} | {row['max_ms']:.2f}"
            f" | {row['idle_cpu_percent']:.2f} |"
        )
    print(f"load average {results['load_average_before']} -> {results['load_average_after']}")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
