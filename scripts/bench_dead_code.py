"""Benchmark how fast `p2prtc join` fails with a code that cannot work (issue 13: < 2 s).

    .venv/bin/python scripts/bench_dead_code.py [--runs 5] [--out bench-results/x.json]

A sharer daemon shares 02.02 on loopback; each run makes a dead code of each kind (used,
expired, burned, unknown, wrong: tests/joins.py, not timed) and times `p2prtc join
CODE` with the default 60 s timeout, from the command's start to its exit, checking that it
failed with that cause. "warm": the joiner's daemon already runs; "cold": the command starts
it (a machine that never ran p2prtc). Prints a table (median, max) and saves JSON.
Loopback only: the joiner dials the sharer's rendezvous port (P2PRTC_PEERS), mDNS off.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.daemons import Node, copy_notebook, loopback_nodes, wait_until
from tests.joins import DEAD_CODES, Sharer

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT.parent / "shared" / "notebooks" / "02.02-The-Basics-Of-NumPy-Arrays.ipynb"
RESULTS = REPO_ROOT / "bench-results" / "bench_dead_code.json"
STARTS = ("warm", "cold")
# The bound, printed beside the figures (never asserted: this is a benchmark).
TARGET_MS = 2000.0


def timed_failure(joiner: Node, code: str, expected: str) -> float:
    """ms from starting `p2prtc join CODE` to its exit; it must fail with ``expected``."""
    started = time.perf_counter()
    result = subprocess.run(
        joiner.command("join", code),
        cwd=joiner.workdir,
        env=joiner.full_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = (time.perf_counter() - started) * 1000
    if (result.returncode, result.stderr.strip()) != (4, expected):
        raise SystemExit(f"join {code}: exit {result.returncode}: {result.stderr.strip()}")
    return took


def linked(node: Node) -> bool:
    """Whether the daemon has a connected peer."""
    return any(peer["connected"] for share in node.status()["shares"] for peer in share["peers"])


def run(runs: int, root: Path) -> dict[str, dict[str, list[float]]]:
    (sharer_node,) = loopback_nodes(root, "sharer")
    notebook = copy_notebook(NOTEBOOK, sharer_node.workdir / NOTEBOOK.name)
    samples: dict[str, dict[str, list[float]]] = {
        start: {cause: [] for cause in DEAD_CODES} for start in STARTS
    }
    try:
        sharer_node.share(notebook)
        sharer = Sharer(sharer_node, notebook)
        for index in range(runs):
            for start in STARTS:
                for cause, make in DEAD_CODES.items():
                    folder = root / f"{start}-{cause}-{index}"
                    code, expected = make(sharer, folder)
                    # As a code used long before: the first joiner (gone) no longer linked.
                    wait_until(lambda: not linked(sharer.node), 30, "the sharer to settle")
                    joiner = sharer.joiner(folder, "joiner")
                    try:
                        if start == "warm":
                            joiner.start()
                        samples[start][cause].append(timed_failure(joiner, code, expected))
                    finally:
                        joiner.shut_down()
                    print(f"  run {index} {start} {cause}: {samples[start][cause][-1]:.0f} ms")
    finally:
        sharer_node.shut_down()
    return samples


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "median_ms": round(statistics.median(values), 1),
        "max_ms": round(max(values), 1),
        "samples_ms": [round(value, 1) for value in values],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dead-") as tmp:
        samples = run(args.runs, Path(tmp))
    results = {
        start: {cause: summary(values) for cause, values in by_cause.items()}
        for start, by_cause in samples.items()
    }
    print(f"\n`p2prtc join` of a dead code, ms to exit (target < {TARGET_MS:.0f})")
    print(f"{'daemon':<6} {'cause':<8} {'n':>3} {'median':>7} {'max':>7}")
    for start, by_cause in results.items():
        for cause, result in by_cause.items():
            print(
                f"{start:<6} {cause:<8} {result['n']:>3}"
                f" {result['median_ms']:>7} {result['max_ms']:>7}"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],  # this machine is shared: figures vary with it
    }
    payload = {"target_ms": TARGET_MS, "machine": machine, "results": results}
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
