"""Benchmark the rename decision: how long finding a vanished file's new name takes.

    .venv/bin/python scripts/bench_renames.py [--runs 5] [--out bench-results/bench_renames.json]

A shared 33 KB notebook is renamed in a folder that also holds other files, all made just
now (the worst case: each is a candidate by its time, so each is read and hashed). Timed:
`renames.new_name` with inotify's hint (a stat), and without it (Syncthing's content rule:
the folder scanned, each recent file read and compared with the versions the daemon knows).
It runs in a worker thread (the event loop goes on meanwhile), after the 2 s grace
(`DELETED_FILE_GRACE_S`), which is not timed here. Prints the median per case and saves
JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from p2prtc.adapters.store import UpdateStore
from p2prtc.daemon.document import SharedFile
from p2prtc.daemon.renames import Gone, new_name
from tests.nbgen import THIS_DAEMON

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT.parent / "shared" / "notebooks" / "02.02-The-Basics-Of-NumPy-Arrays.ipynb"
RESULTS = REPO_ROOT / "bench-results" / "bench_renames.json"
# (other files in the folder, each one's size): notebooks of the same size, or small files.
FOLDERS = {
    "10 notebooks": (10, 33_000),
    "1000 notebooks": (1000, 33_000),
    "10000 small": (10_000, 200),
}


def timed_ms(decide: Callable[[], Path | None], expected: Path, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        found = decide()
        samples.append((time.perf_counter() - start) * 1000)
        assert found == expected, f"found {found}, expected {expected}"
    return statistics.median(samples)


def bench_folder(root: Path, others: int, size: int, runs: int) -> dict[str, float]:
    root.mkdir()
    for index in range(others):
        (root / f"other-{index:05d}.ipynb").write_bytes(os.urandom(size // 2).hex().encode())
    path = root / "nb.ipynb"
    path.write_bytes(NOTEBOOK.read_bytes())
    store = UpdateStore(root.parent / f"{root.name}.sqlite")
    shared = SharedFile.create(path, store, THIS_DAEMON)
    renamed = path.with_name("renamed.ipynb")
    os.rename(path, renamed)
    gone_at, versions = time.time(), shared.own_versions()
    try:
        return {
            "hint_ms": timed_ms(
                lambda: new_name(path, Gone(gone_at, renamed), versions), renamed, runs
            ),
            "content_ms": timed_ms(lambda: new_name(path, Gone(gone_at), versions), renamed, runs),
        }
    finally:
        shared.store.close()


def bench(runs: int) -> dict[str, Any]:
    results: dict[str, Any] = {"load_average_before": os.getloadavg(), "folders": {}}
    with tempfile.TemporaryDirectory(prefix="bench-renames-") as tmp:
        for index, (name, (others, size)) in enumerate(FOLDERS.items()):
            row = bench_folder(Path(tmp) / f"folder-{index}", others, size, runs)
            results["folders"][name] = {"files": others, "file_bytes": size, **row}
    results["load_average_after"] = os.getloadavg()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = bench(args.runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print("| other files in the folder | with inotify's hint, ms | by content, ms |")
    print("| --- | --- | --- |")
    for name, row in results["folders"].items():
        print(f"| {name} | {row['hint_ms']:.3f} | {row['content_ms']:.1f} |")
    print(f"load average {results['load_average_before']} -> {results['load_average_after']}")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
